"""Checked on every path (issue 21): a sole template, a template received from another rank
(distributed autotuning) and templates offered without any reference are checked against
the op's reference on this rank, or replaced by it, and recorded where they were tuned.

Fast cases run Inductor's real selector with hand-made choices (selector_harness); one
real CPU compile reproduces the issue (C++ GEMM template as the only backend)."""

from __future__ import annotations

import pytest
import torch
import torch._inductor.config as inductor_config
from selector_harness import Template, extern, lowering, quiet_logging, select
from torch._inductor.utils import run_and_get_code

import inductor_sm_override as iso
from inductor_sm_override.checks.references import MKL_REFERENCE_NAME
from inductor_sm_override.core import records
from inductor_sm_override.hooks import distributed
from inductor_sm_override.testing import inject_faults
from inductor_sm_override.tools.report import format_table, summarize


@pytest.fixture(autouse=True)
def _harness(monkeypatch):
    iso.clear_decisions()
    with quiet_logging(monkeypatch):
        yield


def _event(name=None):
    events = [e for e in iso.decisions() if name is None or e["name"] == name]
    assert len(events) == 1, iso.decisions()
    return events[0]


def test_sole_wrong_template_never_wins_the_reference_replaces_it():
    with lowering() as (a, b, layout), iso.override():
        bad = Template("sole_bad", [a, b], layout, wrong=True, ms=1e-4)
        node = select("mm", [bad], a, b, layout)
    assert node.get_name() != "out_sole_bad"  # the wrong kernel is not in the graph
    event = _event()
    assert bad.benchmarked == 1  # Inductor would have taken it without running it
    assert event["winner"] == "mm" and event["reference_added"] == "mm"
    assert "mismatch vs extern mm" in event["rejected"]["sole_bad"]
    assert event["winner_unchecked"] is False and event["origin"] == "tuned here"


def test_sole_right_template_is_checked_and_torchs_pick_stands():
    with lowering() as (a, b, layout), iso.override():
        good = Template("sole_good", [a, b], layout, ms=50.0)  # slower than the reference
        node = select("mm", [good], a, b, layout)
    assert node.get_name() == "out_sole_good"  # checked, and still the choice torch took
    event = _event()
    assert event["checks"]["sole_good"]["passed"] is True
    assert event["winner"] == "sole_good" and event["rejected"] == {}
    assert event["timings"]["mm"] is not None  # the reference ran; its time is on record
    assert event["winner_unchecked"] is False


class AddmmTemplate(Template):
    """A template-like addmm choice with ``beta=0``: ``mat1 @ mat2`` (+1 when wrong)."""

    def run(self, inp, mat1, mat2):
        value = mat1 @ mat2
        return value + 1.0 if self.wrong else value


def test_templates_without_extern_are_checked_against_an_added_reference(monkeypatch):
    """addmm has no float64 evaluation: templates offered without an extern had nothing to
    be compared with. The toolkit binds aten_addmm with the lowered node's alpha/beta."""
    from torch._inductor import ir, select_algorithm

    from inductor_sm_override.checks import references
    from inductor_sm_override.torch_plan.compat import selector_cache

    class Node:  # the FX node Inductor is lowering (what the reference reads of it)
        target = torch.ops.aten.addmm.default
        kwargs = {"alpha": 1, "beta": 0}

    monkeypatch.setattr(references, "_lowered_node", lambda: Node)
    with lowering() as (a, b, layout), iso.override():
        bias = ir.InputBuffer(name="bias", layout=layout)
        bad = AddmmTemplate("t_bad", [bias, a, b], layout, wrong=True, ms=1e-4)
        good = AddmmTemplate("t_good", [bias, a, b], layout, ms=5.0)
        result = selector_cache(select_algorithm)("addmm", [bad, good], [bias, a, b], layout)
    node = result[0] if isinstance(result, tuple) else result
    event = _event()
    assert event["reference_added"] == "addmm"
    assert "mismatch vs extern addmm" in event["rejected"]["t_bad"]
    assert event["winner"] == "t_good" and node.get_name() == "out_t_good"


def test_sole_template_without_a_reference_is_recorded_and_counted_unverified():
    with lowering() as (a, b, layout), iso.override():
        select("baddbmm", [Template("sole_t", [a, b], layout)], a, b, layout)
    event = _event()
    assert event["winner"] == "sole_t" and event["winner_unchecked"] is True
    assert "sole_t" in event["unverified"]
    assert any("no reference for baddbmm" in n for n in event["notes"])
    summary = summarize(iso.decisions())
    assert summary["totals"]["unverified"] == 1
    table = format_table(summary)
    assert "1 op taken without a check" in table and "no reference for baddbmm" in table


def test_cap_to_zero_templates_without_extern_uses_the_reference():
    with lowering() as (a, b, layout), iso.override(max_choices=0):
        template = Template("capped", [a, b], layout, wrong=True)
        select("mm", [template], a, b, layout)
    event = _event()
    assert template.benchmarked == 0 and event["kept"] == ["mm"] and event["winner"] == "mm"


def test_received_template_is_checked_here_and_recorded_as_received():
    """What ``_DistributedAutotuneBuffer.autotune`` does on a GPU: the sole received choice
    goes through the selector while distributed.py marks the sender."""
    with lowering() as (a, b, layout), iso.override():
        records.pend("origin", "received from rank 1")  # what distributed.py notes
        select("mm", [Template("received_bad", [a, b], layout, wrong=True)], a, b, layout)
        select("mm", [extern(a, b, layout), Template("mine", [a, b], layout)], a, b, layout)
    received, mine = iso.decisions()
    assert received["origin"] == "received from rank 1"
    assert received["winner"] == "mm" and "received_bad" in received["rejected"]
    assert mine["origin"] == "tuned here"


def test_distributed_autotuning_keeps_cpu_ops_here():
    """On the CPU the C++ template can be neither deferred nor sent (torch alone fails with
    'incorrect local autotuned nodes found'): in a verified block the op is tuned here."""
    from torch._inductor import distributed_autotune

    with lowering() as (a, b, layout), iso.override(), \
            inductor_config.patch(distributed_max_autotune_gemm=True):
        choices = [extern(a, b, layout), Template("cpu_t", [a, b], layout)]
        assert distributed_autotune.maybe_autotune_remote("mm", choices, [a, b], layout) \
            is None
        select("mm", choices, a, b, layout)
    event = _event()
    assert event["origin"] == "tuned here"
    assert any("distributed autotuning: tuned here (on the CPU" in n for n in event["notes"])


def test_why_tuned_here_on_a_gpu_layout(cuda_layout):
    from torch._inductor import ir

    cuda = cuda_layout.device
    a = ir.InputBuffer(name="ga", layout=ir.FixedLayout(cuda, torch.float16, [64, 64]))
    b = ir.InputBuffer(name="gb", layout=ir.FixedLayout(cuda, torch.float16, [64, 64]))
    sendable = [extern(a, b, cuda_layout)]
    assert distributed.why_tuned_here("mm", sendable, [a, b], cuda_layout) is None
    other = [*sendable, Template("not_triton", [a, b], cuda_layout)]
    assert "cannot be sent" in distributed.why_tuned_here("mm", other, [a, b], cuda_layout)


@pytest.mark.slow
def test_sole_corrupted_cpp_template_never_wins_in_a_real_compile():
    """The issue's reproduction: ``max_autotune_gemm_backends=CPP`` leaves the C++ GEMM
    template as the sole choice of each linear; its timed output is corrupted. Before the
    fix it won unbenchmarked; now it is checked against MKL, rejected, and MKL is used."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32)).eval()
    x = torch.randn(16, 64)
    torch._dynamo.reset()
    with torch.no_grad(), inductor_config.patch(freezing=True, max_autotune_gemm_backends="CPP"), \
            inject_faults("cpp", "wrong") as corrupted, iso.override():
        out, code = run_and_get_code(torch.compile(model, mode="max-autotune-no-cudagraphs"), x)
    code = "\n".join(code)
    assert corrupted, "no C++ template was offered"
    event = _event("packed_linear")
    assert event["offered"] == corrupted  # the template was the sole choice
    assert event["winner"] == MKL_REFERENCE_NAME and corrupted[0] in event["rejected"]
    assert "_mkl_linear" in code and "micro_gemm" not in code
    torch.testing.assert_close(out, model(x))
    assert summarize(iso.decisions())["totals"]["unverified"] == 0


@pytest.mark.gpu
def test_sole_corrupted_triton_template_never_wins_on_a_gpu():
    """On a CUDA GPU with ATen excluded and one template config kept, the Triton template
    is the sole choice of the mm: corrupted, it is rejected and cuBLAS (aten mm) is used."""
    torch.manual_seed(0)
    a = torch.randn(256, 512, device="cuda", dtype=torch.float16)
    b = torch.randn(512, 128, device="cuda", dtype=torch.float16)
    torch._dynamo.reset()
    with inductor_config.patch(max_autotune_gemm_backends="TRITON"), \
            inject_faults("triton", "wrong") as corrupted, iso.override(max_choices=1):
        out = torch.compile(torch.mm, mode="max-autotune-no-cudagraphs")(a, b)
    event = _event("mm")
    assert corrupted and event["reference_added"] == "mm" and event["winner"] == "mm"
    assert all(name in event["rejected"] for name in event["kept"] if name != "mm")
    torch.testing.assert_close(out, a @ b, rtol=2e-2, atol=2e-2)
