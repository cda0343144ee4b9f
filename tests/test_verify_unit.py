"""The comparison rules and tolerances (no compile)."""

from __future__ import annotations

import math

import pytest
import torch

from inductor_sm_override.checks.verify import compare, default_tolerances, fp64_reference


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
