"""Fused template kernels are checked against the unfused path before the scheduler keeps
them, and a failing one falls back to the unfused choice (issue 22, item 2). On the CPU:
Inductor's real autotuner and MultiTemplateBuffer, torch's FusionResult and KernelArgs, a
faithful fake of the GPU-only scheduler parts (tests/fusion_harness.py)."""

from __future__ import annotations

import json

import pytest
import torch
import wrapt
from fusion_harness import FakeScheduler, FusableTemplate, SNode, decided, register_names
from selector_harness import extern, lowering, quiet_logging, run_deferred, select
from torch._inductor import ir

import inductor_sm_override as iso
from inductor_sm_override.core import events
from inductor_sm_override.hooks import fusion
from inductor_sm_override.torch_plan import compat

_RELEASE = tuple(int(p) for p in compat.torch_release(torch.__version__).split("."))
pytestmark = pytest.mark.skipif(_RELEASE < (2, 10), reason="torch < 2.10 never defers CPU ops")


FUSED: list[dict] = []  # the "fusion" events published in a test


def _checks() -> list[dict]:
    return list(FUSED)


@pytest.fixture(autouse=True)
def _harness(monkeypatch):
    iso.clear_decisions()
    FUSED.clear()
    monkeypatch.setattr(events, "listeners", [
        lambda e: FUSED.append(e) if e.get("event") == "fusion" else None])
    checked = wrapt.FunctionWrapper(vars(FakeScheduler)["speedup_by_fusion"],
                                    fusion._speedup_by_fusion)  # the real patch's wrapper
    monkeypatch.setattr(FakeScheduler, "speedup_by_fusion", checked)
    with quiet_logging(monkeypatch):
        yield


def _deferred_gemm(choices_for, size=16, pad=0, mask=False, **settings):
    """An mm deferred as a MultiTemplateBuffer (verified unfused), a GELU(+bias) epilogue
    node after it (``mask``: relu(+bias) and a bool ``> 0`` mask, two outputs), and the
    scheduler about to decide their fusion. ``pad``: the GEMM inputs' rows padded."""
    lower = lowering(size=size, pad=pad)
    a, b, layout = lower.__enter__()
    block = iso.override(**settings)
    block.__enter__()
    choices = choices_for(a, b, layout)
    node = select("mm", [extern(a, b, layout), *choices], a, b, layout, deferred=True)
    run_deferred(node)  # the scheduler-time autotuning: unfused checks
    multi = node.data.data
    bias = ir.InputBuffer(name="bias", layout=ir.FixedLayout(layout.device, layout.dtype, [size]))
    out = ir.InputBuffer(name="buf_gelu", layout=layout)
    flags = ir.InputBuffer(name="buf_mask", layout=ir.FixedLayout(layout.device, torch.bool,
                                                                   [size, size]))
    register_names(a, b, bias, out, flags)
    epilogue = SNode("gelu")
    epilogue.reads = multi.get_name()
    scheduler = FakeScheduler("a", "b", "bias", "buf_gelu", size, pad=pad,
                              mask="buf_mask" if mask else None)

    def close():
        block.__exit__(None, None, None)
        lower.__exit__(None, None, None)

    return scheduler, SNode(multi.get_name(), template=multi), epilogue, multi, choices, close


def test_correct_fused_kernel_is_kept_and_recorded(tmp_path):
    report = tmp_path / "iso.jsonl"
    scheduler, node1, node2, multi, (good,), close = _deferred_gemm(
        lambda a, b, layout: [FusableTemplate("tmpl_good", [a, b], layout, ms=0.01)],
        verify=True, report=str(report))
    try:
        assert decided(scheduler.speedup_by_fusion(node1, node2)) is True, _checks()
        assert multi.make_kernel_render is good.make_kernel_render  # finalized as fused
    finally:
        close()
    (event,) = iso.decisions()
    (check,) = event["fused"]
    assert check["passed"] is True and check["choice"] == "tmpl_good"
    assert check["reference"] == "extern mm + unfused kernels"
    assert check["compared"] == ["buf_gelu"] and check["max_abs"] < 1e-4
    # the reference path really ran: the fused kernel, then the epilogue alone
    assert scheduler.compiled[-2:] == [[node1.name, "gelu"], ["gelu"]]
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert next(e for e in lines if e["event"] == "fusion")["passed"] is True


def test_wrong_fused_kernel_is_rejected_and_the_unfused_choice_stays():
    scheduler, node1, node2, multi, (bad,), close = _deferred_gemm(
        lambda a, b, layout: [FusableTemplate("tmpl_fused_bad", [a, b], layout, ms=1e-6,
                                              fused_wrong=True)],
        verify=True)
    unfused_timings = dict(multi.choice_timings())
    try:
        assert decided(scheduler.speedup_by_fusion(node1, node2)) is False  # not fused
        assert multi.make_kernel_render is None  # the decision was undone
        assert multi.choice_timings() == unfused_timings  # the verified unfused timings
        choice, _ms = multi.get_min_choice()  # what finalize_multi_template_buffers takes
        assert choice is bad  # unfused, it was checked and is right: it may still win
    finally:
        close()
    (event,) = iso.decisions()
    (check,) = event["fused"]
    assert check["passed"] is False and check["choice"] == "tmpl_fused_bad"
    assert check["reason"].startswith("mismatch vs extern mm + unfused kernels in buf_gelu")
    assert event["rejected"] == {}  # the unfused kernel itself passed its check


def test_unverified_block_keeps_torchs_decision():
    scheduler, node1, node2, multi, (bad,), close = _deferred_gemm(
        lambda a, b, layout: [FusableTemplate("tmpl_fused_bad", [a, b], layout, ms=1e-6,
                                              fused_wrong=True)],
        verify=False)
    try:
        assert decided(scheduler.speedup_by_fusion(node1, node2)) is True  # torch's pick
        assert multi.make_kernel_render is bad.make_kernel_render
    finally:
        close()
    assert _checks() == []


def test_atomic_add_epilogue_is_declined_not_run():
    scheduler, node1, node2, multi, _choices, close = _deferred_gemm(
        lambda a, b, layout: [FusableTemplate("tmpl_good", [a, b], layout, ms=0.01)],
        verify=True)
    scheduler.atomic = True
    try:
        assert decided(scheduler.speedup_by_fusion(node1, node2)) is False
        assert multi.make_kernel_render is None
    finally:
        close()
    (check,) = _checks()
    assert check["passed"] is False and "atomic-add" in check["reason"]
    assert scheduler.compiled == [[node1.name, "gelu"]]  # only torch's own compile


def test_outside_a_block_the_decision_is_untouched():
    scheduler, node1, node2, _multi, _choices, close = _deferred_gemm(
        lambda a, b, layout: [FusableTemplate("tmpl_fused_bad", [a, b], layout, ms=1e-6,
                                              fused_wrong=True)],
        verify=True)
    close()  # the block has ended before the scheduler decides
    with lowering():
        assert decided(scheduler.speedup_by_fusion(node1, node2)) is True
    assert _checks() == []


def test_kernel_arguments_are_read_from_torchs_kernel_args():
    """The names, written buffers and in-place pairs of a real KernelArgs, in get_args()
    order (what TritonKernel.codegen_kernel_benchmark writes from python_argdefs())."""
    from torch._inductor.codegen.common import KernelArgs

    with lowering() as (a, b, layout):
        c = ir.InputBuffer(name="c", layout=layout)
        register_names(a, b, c)
        args = KernelArgs()
        args.input("a")
        args.input("b")
        args.output("c")
        info = fusion.kernel_args(type("K", (), {"args": args})())
    assert info.names == ("a", "b", "c") and info.written == frozenset({"c"})
    assert info.source("c") == "c" and info.inplace == {}
    with lowering() as (a, b, layout):  # an in-place kernel: b's memory becomes d
        d = ir.InputBuffer(name="d", layout=layout)
        register_names(a, b, d)
        args = KernelArgs()
        args.input("a")
        args.input("b")
        args.make_inplace("b", "d")
        args.output("d")
        info = fusion.kernel_args(type("K", (), {"args": args})())
    assert info.names == ("d", "a") and info.written == frozenset({"d"})
    assert info.source("d") == "b" and info.inplace == {"d": ("b", "d")}


def test_fused_fault_injection_corrupts_only_the_last_store():
    from inductor_sm_override.testing import FUSED_FAULT_MARK, corrupt_last_store

    source = ("    tl.store(out_ptr0 + (xindex), acc, mask)\n"
              "    tmp9 = tmp8 * tmp2\n"
              "    tl.store(out_ptr1 + (tl.broadcast_to(x, [XB, YB])), tmp9, mask & (x < 3))\n"
              "def get_args():\n")
    lines = corrupt_last_store(source).splitlines()
    assert lines[0] == "    tl.store(out_ptr0 + (xindex), acc, mask)"
    assert lines[2] == ("    tl.store(out_ptr1 + (tl.broadcast_to(x, [XB, YB])), (tmp9) * 1.5 "
                        f"+ 1.0, mask & (x < 3))  {FUSED_FAULT_MARK}")
    assert lines[3] == "def get_args():"


def test_fused_fault_injection_is_undone():
    from torch._inductor.codegen.simd import SIMDScheduling
    from torch._inductor.codegen.triton import TritonScheduling

    from inductor_sm_override.testing import inject_fused_faults

    before = (vars(SIMDScheduling)["generate_kernel_code_from_nodes"],
              vars(TritonScheduling)["define_kernel"])
    with inject_fused_faults() as corrupted:
        assert vars(SIMDScheduling)["generate_kernel_code_from_nodes"] is not before[0]
        assert corrupted == []
    assert (vars(SIMDScheduling)["generate_kernel_code_from_nodes"],
            vars(TritonScheduling)["define_kernel"]) == before


# --- issue 27: padded buffers, bool outputs near the threshold ------------------------------

def test_a_padded_fusion_is_checked_and_kept_when_correct():
    """The kernel arguments keep their padded strides through the check (a dense ``.clone()``
    made ``as_strided`` for the extern's inputs fail, and every such fusion was declined)."""
    with torch._inductor.config.patch(comprehensive_padding=True, disable_padding_cpu=False):
        scheduler, node1, node2, multi, (good,), close = _deferred_gemm(
            lambda a, b, layout: [FusableTemplate("tmpl_good", [a, b], layout, ms=0.01)],
            pad=4, verify=True)
        try:
            assert decided(scheduler.speedup_by_fusion(node1, node2)) is True, _checks()
            assert multi.make_kernel_render is good.make_kernel_render
        finally:
            close()
    (check,) = _checks()
    assert check["passed"] is True and check["compared"] == ["buf_gelu"]


def test_a_padded_wrong_fusion_is_still_declined():
    scheduler, node1, node2, _multi, _choices, close = _deferred_gemm(
        lambda a, b, layout: [FusableTemplate("tmpl_bad", [a, b], layout, ms=1e-6,
                                              fused_wrong=True)], pad=4, verify=True)
    try:
        assert decided(scheduler.speedup_by_fusion(node1, node2)) is False
    finally:
        close()
    (check,) = _checks()
    assert check["reason"].startswith("mismatch vs extern mm + unfused kernels in buf_gelu")


def test_a_mask_flipped_where_the_gemm_is_within_tolerance_of_zero_keeps_the_fusion():
    """A relu mask saved for the backward: the fused kernel's GEMM value nearest 0 lands on
    the other side (a difference the unfused check accepts). Compared exactly, such fusions
    were declined at random; the shifted reference runs allow exactly those flips."""
    scheduler, node1, node2, _multi, (_good,), close = _deferred_gemm(
        lambda a, b, layout: [FusableTemplate("tmpl_flip", [a, b], layout, ms=0.01,
                                              fused_flip=True)], size=64, mask=True,
        verify=True)
    try:
        assert decided(scheduler.speedup_by_fusion(node1, node2)) is True, _checks()
    finally:
        close()
    (check,) = _checks()
    assert check["passed"] is True and sorted(check["compared"]) == ["buf_gelu", "buf_mask"]
    assert check["max_abs"] == 1.0  # one mask element did flip


def test_a_wrong_mask_declines_the_fusion():
    scheduler, node1, node2, _multi, _choices, close = _deferred_gemm(
        lambda a, b, layout: [FusableTemplate("tmpl_mask", [a, b], layout, ms=0.01,
                                              mask_wrong=True)], size=64, mask=True,
        verify=True)
    try:
        assert decided(scheduler.speedup_by_fusion(node1, node2)) is False
    finally:
        close()
    (check,) = _checks()
    assert check["reason"].startswith("mismatch vs extern mm + unfused kernels in buf_mask")
