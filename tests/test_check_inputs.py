"""The check's own inputs (issue 27): every operand drawn apart, seeded per op, with the
buffer's real size, stride, storage offset and padding; real tensors (``input_gen_fns``)
never touched; deterministic mode never takes a template unchecked."""

from __future__ import annotations

import pytest
import torch
import torch._inductor.config as inductor_config
from selector_harness import (
    GemmTemplate,
    Template,
    extern,
    gemm,
    lowering,
    quiet_logging,
    select,
    select_inputs,
)

import inductor_sm_override as iso
from inductor_sm_override.checks.inputs import op_seed, reseed, storage_view, strided_copy
from inductor_sm_override.testing import inject_faults


@pytest.fixture(autouse=True)
def _harness(monkeypatch):
    iso.clear_decisions()
    with quiet_logging(monkeypatch):
        yield


def _padded() -> torch.Tensor:
    """A (4, 5) view with row stride 8 at storage offset 3 (what Inductor's padding makes)."""
    return torch.empty(40).as_strided((4, 5), (8, 1), 3)


# --- the helpers ---------------------------------------------------------------------------

def test_reseed_keeps_the_layout_and_fills_the_padding_too():
    t = _padded()
    storage = t.untyped_storage().data_ptr()
    assert reseed(t, 7) is t
    assert (t.shape, t.stride(), t.storage_offset()) == ((4, 5), (8, 1), 3)
    assert t.untyped_storage().data_ptr() == storage
    whole = storage_view(t)
    assert whole.shape == (40,) and torch.isfinite(whole).all() and whole.std() > 0.5


def test_seeds_are_reproducible_and_apart_and_leave_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, again = (reseed(torch.empty(8, 8), op_seed("mm", [[8, 8]], i)) for i in (0, 1, 0))
    assert torch.equal(a, again) and not torch.equal(a, b)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert op_seed("mm", [[8, 8]], 0) != op_seed("bmm", [[8, 8]], 0)
    assert 0 <= op_seed("x") < 2 ** 63


@pytest.mark.parametrize("dtype, low, high", [(torch.int8, 0, 7), (torch.uint8, 0, 7),
                                               (torch.int32, 0, 7), (torch.bool, 0, 1)])
def test_integer_draws_are_small_and_non_negative(dtype, low, high):
    t = reseed(torch.empty(1000, dtype=dtype), 3)
    assert t.min() == low and t.max() == high
    zeros = torch.zeros(10, dtype=dtype)
    assert torch.equal(reseed(zeros, 3, integers=False), torch.zeros(10, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float8_e4m3fn])
def test_low_precision_floats_are_drawn(dtype):
    t = reseed(torch.zeros(256, dtype=dtype), 5).float()
    assert torch.isfinite(t).all() and 0.5 < t.std() < 2.0


def test_strided_copy_keeps_the_padding_a_clone_loses():
    t = reseed(_padded(), 1)
    copy = strided_copy(t)
    assert (copy.shape, copy.stride(), copy.storage_offset()) == ((4, 5), (8, 1), 3)
    assert torch.equal(copy, t) and copy.untyped_storage().data_ptr() != \
        t.untyped_storage().data_ptr()
    assert torch.as_strided(copy, (4, 5), (8, 1), 3).shape == (4, 5)
    with pytest.raises(RuntimeError):  # the example: a dense clone is too small
        torch.as_strided(t.clone(), (4, 5), (8, 1), 3)


# --- inside Inductor's get_inputs ----------------------------------------------------------

class Recording(GemmTemplate):
    """Keeps copies of the inputs it was benchmarked on."""

    def benchmark(self, *args, out):
        self.seen = [strided_copy(a) for a in args]
        return super().benchmark(*args, out=out)


def _inputs_seen(op="mm", **shape):
    with gemm(op, **shape) as (inputs, layout, reference), iso.override(quiet=True):
        template = Recording("t_rec", inputs, layout)
        select_inputs(op, [reference, template], inputs, layout)
    return template.seen, iso.decisions()[-1]


def test_operands_of_one_shape_differ_and_the_same_op_draws_the_same_again():
    seen, event = _inputs_seen("bmm", m=64, k=64, n=64)
    a, b = seen
    assert a.shape == b.shape and not torch.equal(a, b)  # torch's own draws: a == b
    again, _ = _inputs_seen("bmm", m=64, k=64, n=64)
    assert all(torch.equal(x, y) for x, y in zip(seen, again, strict=True))
    assert event["checks"]["t_rec"]["passed"] is True


def test_outside_a_verified_block_torchs_draws_stand():
    with gemm("mm", m=32, k=32, n=32) as (inputs, layout, reference), \
            iso.override(quiet=True, verify=False):
        template = Recording("t_rec", inputs, layout)
        select_inputs("mm", [reference, template], inputs, layout)
    a, b = template.seen
    assert torch.equal(a, b)  # untouched: torch's equal draws


def test_padded_operands_keep_their_strides_and_the_check_still_judges():
    with inductor_config.patch(comprehensive_padding=True, disable_padding_cpu=False):
        seen, event = _inputs_seen("mm", m=16, k=24, n=20, pad=5)
        with inject_faults("t_bad", ["swap", "k_tail", "transpose"]):
            _seen, bad = _inputs_seen_with_bad("mm", m=16, k=24, n=20, pad=5)
    a, b = seen
    assert a.stride() == (29, 1) and b.stride() == (25, 1)
    assert a.untyped_storage().nbytes() // 4 >= 15 * 29 + 24
    assert event["checks"]["t_rec"]["passed"] is True
    assert set(bad["rejected"]) == {"t_bad:swap", "t_bad:k_tail", "t_bad:transpose"}


def _inputs_seen_with_bad(op, **shape):
    with gemm(op, **shape) as (inputs, layout, reference), iso.override(quiet=True):
        template = Recording("t_rec", inputs, layout)
        select_inputs(op, [reference, template, GemmTemplate("t_bad", inputs, layout)], inputs,
                      layout)
    return template.seen, iso.decisions()[-1]


def test_tensors_from_input_gen_fns_are_never_drawn_nor_written():
    real = torch.randn(32, 32)
    kept = real.clone()
    with gemm("mm", m=32, k=32, n=32) as (inputs, layout, reference), iso.override(quiet=True), \
            inject_faults("t_bad", ["swap", "k_tail"]):
        template = Recording("t_rec", inputs, layout)
        select_inputs("mm", [reference, template, GemmTemplate("t_bad", inputs, layout)],
                      inputs, layout, input_gen_fns={1: lambda node: real})
    assert torch.equal(real, kept)  # the faults worked on copies, the seeding skipped it
    assert torch.equal(template.seen[1], real)
    assert set(iso.decisions()[-1]["rejected"]) == {"t_bad:swap", "t_bad:k_tail"}


# --- deterministic mode --------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(inductor_config, "deterministic"), reason="no config.deterministic")
def test_deterministic_mode_takes_the_reference_not_an_unchecked_template():
    """Inductor takes a choice without benchmarking (2.13: the first ExternKernelCaller,
    else choices[0]; 2.11: choices[0]). Before issue 27 two templates of an mm (which has a
    float64 evaluation) got no reference, and the first, wrong, template was taken."""
    with lowering() as (a, b, layout), iso.override(quiet=True), \
            inductor_config.patch(deterministic=True):
        bad = Template("det_bad", [a, b], layout, wrong=True)
        other = Template("det_other", [a, b], layout)
        node = select("mm", [bad, other], a, b, layout)
    event = iso.decisions()[-1]
    assert node.get_name() not in ("out_det_bad", "out_det_other")
    assert event["winner"] == "mm" and event["reference_added"] == "mm"
    assert bad.benchmarked == 0 and event["winner_unchecked"] is False
    assert any("deterministic mode" in note for note in event["notes"])


@pytest.mark.skipif(not hasattr(inductor_config, "deterministic"), reason="no config.deterministic")
def test_deterministic_mode_with_an_extern_takes_the_extern():
    with lowering() as (a, b, layout), iso.override(quiet=True), \
            inductor_config.patch(deterministic=True):
        node = select("mm", [Template("det_t", [a, b], layout, wrong=True), extern(a, b, layout)],
                      a, b, layout)
    event = iso.decisions()[-1]
    assert node.get_name() != "out_det_t" and event["winner"] == "mm"
    assert event["reference_added"] is None
