"""The comparison rules and tolerances (no compile)."""

from __future__ import annotations

import math

import pytest
import torch

from inductor_sm_override.checks.verify import (
    compare,
    default_tolerances,
    fp64_reference,
    reduction_length,
)


def test_identical_passes_and_reports_zero_error():
    ref = torch.randn(8, 8)
    check = compare(ref.clone(), ref)
    assert check.passed and check.max_abs == 0.0


def test_wrong_values_fail_with_a_reason():
    ref = torch.randn(8, 8)
    check = compare(ref * 1.5 + 1, ref)
    assert not check.passed and "values off" in check.reason and check.max_abs > 0.5


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_where_reference_is_finite_fails(bad):
    ref = torch.randn(8, 8)
    out = ref.clone()
    out[3, 3] = bad
    check = compare(out, ref)
    assert not check.passed and "NaN/Inf" in check.reason and math.isinf(check.max_abs)


def test_reference_inf_must_be_reproduced():
    ref = torch.randn(4)
    ref[0] = float("inf")
    assert compare(ref.clone(), ref).passed
    out = ref.clone()
    out[0] = 0.0
    assert not compare(out, ref).passed


def test_tolerance_scales_with_reference_magnitude():
    ref = torch.randn(64, 64, dtype=torch.float16) * 1000
    noisy = ref + (torch.randn_like(ref) * 1.0)  # 0.1% of the RMS: fp16-level noise
    assert compare(noisy, ref).passed
    assert not compare(ref + 100.0, ref).passed  # 10% shift: a wrong kernel


def test_user_tolerances_are_absolute_and_win():
    ref = torch.zeros(4)
    assert not compare(ref + 0.5, ref, rtol=0.0, atol=0.1).passed
    assert compare(ref + 0.05, ref, rtol=0.0, atol=0.1).passed


def test_shape_mismatch_fails():
    assert "shape" in compare(torch.zeros(2, 3), torch.zeros(3, 2)).reason


def test_default_tolerances_by_dtype():
    assert default_tolerances(torch.float16) == (2e-2, 2e-2)
    assert default_tolerances(torch.bfloat16)[0] > default_tolerances(torch.float16)[0]
    assert default_tolerances(torch.int32) == (0.0, 0.0)
    ints = torch.arange(6, dtype=torch.int32)
    assert not compare(ints + 1, ints).passed


def test_fp64_reference_for_known_ops_only():
    a, b = torch.randn(4, 5), torch.randn(5, 3)
    wide = fp64_reference("mm", [a, b])
    assert wide.dtype == torch.float64
    torch.testing.assert_close(wide, a.double() @ b.double())
    assert fp64_reference("convolution", [a, b]) is None


# --- issue 27: tests that would catch a broken check ---------------------------------------

def test_just_inside_the_tolerance_passes_and_just_outside_fails():
    ref = torch.full((4, 4), 2.0)  # RMS 2: default float32 atol 0.02, rtol 1e-2 -> 0.04
    assert compare(ref + 0.039, ref).passed
    assert not compare(ref + 0.041, ref).passed
    near = ref.clone()
    near[1, 2] += 0.041  # one value is enough
    check = compare(near, ref)
    assert not check.passed and "1 of 16 values" in check.reason


def test_a_nan_reference_must_be_reproduced_exactly():
    ref = torch.randn(8)
    ref[2] = float("nan")
    same = ref.clone()
    assert compare(same, ref).passed  # NaN where the reference has NaN
    for bad in (0.0, float("inf")):
        out = ref.clone()
        out[2] = bad
        assert not compare(out, ref).passed
    out = ref.clone()
    out[5] = float("nan")  # and nowhere else
    assert not compare(out, ref).passed


def test_integer_outputs_are_exact():
    ints = torch.arange(-8, 8, dtype=torch.int32).reshape(4, 4)
    check = compare(ints.clone(), ints)
    assert check.passed and check.max_abs == 0.0 and check.atol == 0.0
    off = ints.clone()
    off[0, 0] += 1
    assert not compare(off, ints).passed
    assert not compare(ints.to(torch.int64) * 2, ints.to(torch.int64)).passed


def test_a_user_rtol_applies_against_a_non_zero_reference():
    ref = torch.full((8,), 100.0)
    assert compare(ref * 1.04, ref, rtol=0.05, atol=0.0).passed
    assert not compare(ref * 1.06, ref, rtol=0.05, atol=0.0).passed
    assert not compare(ref * 1.04, ref, rtol=0.01, atol=0.0).passed
    assert compare(ref * 1.04, ref, rtol=0.0, atol=5.0).passed  # absolute, not x RMS


def test_slack_widens_the_allowance_elementwise_and_nan_counts_as_none():
    ref = torch.zeros(4)
    out = torch.tensor([0.0, 0.5, 0.0, 0.0])
    assert not compare(out, ref, rtol=0.0, atol=0.1).passed
    assert compare(out, ref, rtol=0.0, atol=0.1, slack=torch.tensor([0, 0.5, 0, 0])).passed
    assert not compare(out, ref, rtol=0.0, atol=0.1,
                       slack=torch.tensor([0.5, float("nan"), 0, 0])).passed
    flags = torch.tensor([True, False])
    assert compare(~flags, flags, slack=torch.tensor([1.0, 1.0])).passed  # bools: flips


def test_the_checks_atol_and_rtol_are_the_band_it_accepts():
    """What the fused check shifts the GEMM output by (fusion.py) is exactly this band."""
    ref = torch.randn(64, 64)
    bound = compare(ref, ref)
    band = bound.atol + bound.rtol * ref.abs()
    assert compare(ref + band * 0.99, ref).passed
    assert not compare(ref + band * 1.01, ref).passed
    ints = ref.to(torch.int32)
    assert compare(ints, ints).atol == 0.0 and compare(ints, ints).rtol == 0.0


def test_low_precision_atol_grows_with_sqrt_k_beyond_1024():
    assert default_tolerances(torch.float16, 1024) == (2e-2, 2e-2)
    assert default_tolerances(torch.float16, 4096) == (2e-2, pytest.approx(4e-2))
    assert default_tolerances(torch.bfloat16, 16384) == (4e-2, pytest.approx(0.16))
    assert default_tolerances(torch.float32, 8192) == (1e-2, 1e-2)  # not low precision
    assert default_tolerances(torch.int8, 8192) == (0.0, 0.0)


def test_fp16_at_k8192_a_correct_result_passes_and_a_dropped_k_block_fails():
    torch.manual_seed(0)
    a, b = torch.randn(64, 8192).half(), torch.randn(8192, 64).half()
    ref = (a.float() @ b.float()).half()
    acc = torch.zeros(64, 64, dtype=torch.half)  # a kernel accumulating in fp16 (4 at a time)
    for i in range(0, 8192, 4):
        acc = acc + (a[:, i:i + 4].float() @ b[i:i + 4].float()).half()
    assert compare(acc, ref, k=8192).passed
    assert not compare(acc, ref).passed  # the unscaled tolerance would reject it
    short = a.clone()
    short[:, -32:] = 0  # the last K block dropped
    assert not compare((short.float() @ b.float()).half(), ref, k=8192).passed


@pytest.mark.parametrize("op, shapes, k", [
    ("mm", [[8, 96], [96, 4]], 96), ("bmm", [[2, 8, 96], [2, 96, 4]], 96),
    ("addmm", [[8, 4], [8, 96], [96, 4]], 96), ("packed_linear", [[8, 96], [1, 1], [4, 96]], 96),
    ("convolution", [[1, 3, 8, 8], [16, 3, 5, 5]], 75), ("mm", [["s0", "s1"], [96, 4]], None),
    ("mm", [], None),
])
def test_reduction_length_per_op(op, shapes, k):
    assert reduction_length(op, shapes) == k
