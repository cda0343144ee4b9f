"""On a real GPU (marked gpu; skipped without CUDA): the real gate, verification of a
corrupted Triton template, decompose_k and fused template kernels, and the SM simulation.
limit_sms timing: test_limit_sms.py."""

from __future__ import annotations

import re

import pytest
import torch
import torch._inductor.config as inductor_config
from torch._inductor.utils import run_and_get_code

import inductor_sm_override as iso
from inductor_sm_override.core import events
from inductor_sm_override.testing import FUSED_FAULT_MARK, inject_faults, inject_fused_faults

pytestmark = pytest.mark.gpu
MODE = "max-autotune-no-cudagraphs"


def _mm(m=256, n=256, k=256):
    a = torch.randn(m, k, device="cuda", dtype=torch.float16)
    b = torch.randn(k, n, device="cuda", dtype=torch.float16)
    return a, b


def _compile_mm(a, b, **settings):
    torch._dynamo.reset()
    iso.clear_decisions()
    with inductor_config.patch(fx_graph_cache=False, autotune_local_cache=False), \
            iso.override(**settings):
        out, code = run_and_get_code(torch.compile(lambda x, y: x @ y, mode=MODE), a, b)
    return out, "\n".join(code), iso.decisions()


def test_real_gate_with_simulated_46_sms():
    import torch._inductor.utils as utils

    with iso.override(simulate_sms=46, min_sms=68, verify=False):
        assert utils.is_big_gpu(0) is False  # what a 46-SM part gets today
    a, b = _mm()
    _out, gated_code, _ = _compile_mm(a, b, simulate_sms=46, min_sms=68, verify=False)
    assert "triton_tem" not in gated_code and "triton_mm" not in gated_code
    out, _code, events = _compile_mm(a, b, simulate_sms=46)
    assert events and any(n.startswith("triton_mm") for n in events[0]["offered"])
    assert events[0]["sms"] == 46
    torch.testing.assert_close(out, a @ b, rtol=2e-2, atol=2e-2)


def test_corrupted_triton_template_is_rejected_and_compile_is_right():
    a, b = _mm()
    with inject_faults("triton_mm", "wrong") as corrupted:
        out, _code, events = _compile_mm(a, b, max_choices=4)
    assert corrupted
    (event,) = events
    assert set(corrupted) & set(event["rejected"])
    assert event["winner"] not in event["rejected"]
    assert event["winner"] not in corrupted  # no corrupted choice won, rejected or not
    torch.testing.assert_close(out, a @ b, rtol=2e-2, atol=2e-2)


def test_unverified_corrupted_template_wins_sanity_baseline():
    a, b = _mm()
    with inject_faults("triton_mm", "wrong") as corrupted:
        _out, _code, events = _compile_mm(a, b, max_choices=4, verify=False)
    assert events[0]["winner"] in corrupted


# --- issue 14: the GPU code paths (written from the 2.11 / 2.13 source; see SAFETY.md) -----

def _events(name=None):
    return [e for e in iso.decisions() if name is None or e["name"].startswith(name)]


def test_flex_attention_compiles_under_verify_and_is_untouched():
    from torch.nn.attention.flex_attention import flex_attention

    q, k, v = (torch.randn(1, 2, 256, 64, device="cuda", dtype=torch.float16)
               for _ in range(3))
    torch._dynamo.reset()
    iso.clear_decisions()
    with inductor_config.patch(fx_graph_cache=False), iso.override(verify=True, max_choices=2):
        out = torch.compile(flex_attention, mode=MODE)(q, k, v)
    torch.testing.assert_close(out, flex_attention(q, k, v), rtol=2e-2, atol=2e-2)
    flex = _events("flex_attention")
    assert flex, iso.decisions()
    for event in flex:
        assert event["rejected"] == {} and event["verified_op"] is False
        assert event["kept"] == event["offered"]  # not capped
        assert any("unverified: no reference" in n for n in event["notes"])


def _op_offering(events, prefix):
    """The op whose choices include ``prefix*`` (a subgraph's own compile records its inner
    ops as well)."""
    (event,) = [e for e in events if any(n.startswith(prefix) for n in e["offered"])]
    return event


def test_decompose_k_is_capped_and_verified_by_what_it_computes():
    """K >= 32*M and K >= 32*N: torch offers decompose_k (2.11 kernel/mm.py:411). Its
    benchmark never writes ``out``; its real output must pass the check (issue 22, item 1)."""
    a = torch.randn(64, 8192, device="cuda", dtype=torch.float16)
    b = torch.randn(8192, 64, device="cuda", dtype=torch.float16)
    _out, _code, events = _compile_mm(a, b, max_choices=0)
    event = _op_offering(events, "decompose_k")
    offered = [n for n in event["offered"] if n.startswith("decompose_k")]
    assert set(offered) <= set(event["capped"])  # a template, not an extern
    out, _code, events = _compile_mm(a, b)
    event = _op_offering(events, "decompose_k")
    kept = [n for n in event["kept"] if n.startswith("decompose_k")]
    assert kept, event
    for name in kept:
        assert name not in event["rejected"], event["rejected"]
        assert event["checks"][name]["passed"] is True, event["checks"]
    torch.testing.assert_close(out, a @ b, rtol=2e-2, atol=2e-2)


def test_outputs_written_at_an_offset_are_not_rejected():
    """cat() makes Inductor write GEMM outputs into slices of one buffer (layout offset)."""
    a, b = _mm(256, 256, 256)
    c, d = _mm(256, 256, 256)
    torch._dynamo.reset()
    iso.clear_decisions()
    with inductor_config.patch(fx_graph_cache=False), iso.override(max_choices=4):
        out, code = run_and_get_code(
            torch.compile(lambda w, x, y, z: torch.cat([w @ x, y @ z]), mode=MODE), a, b, c, d)
    torch.testing.assert_close(out, torch.cat([a @ b, c @ d]), rtol=2e-2, atol=2e-2)
    assert "65536" in "\n".join(code)  # the second product is written at offset 256*256
    events = [e for e in iso.decisions() if e["name"] == "mm"]
    assert len(events) == 2, iso.decisions()
    for event in events:
        assert not [r for r in event["rejected"].values() if r.startswith("mismatch")], event
        templates = [n for n in event["timings"] if n not in event["externs"]]
        assert templates and all(event["checks"][n]["passed"] is True for n in templates)


def test_deferred_budget_holds_and_every_op_gets_templates():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.ReLU(),
                                torch.nn.Linear(1024, 768), torch.nn.ReLU(),
                                torch.nn.Linear(768, 512)).cuda().half()
    x = torch.randn(256, 512, device="cuda", dtype=torch.float16)
    torch._dynamo.reset()
    iso.clear_decisions()
    budget_s = 60.0
    with inductor_config.patch(fx_graph_cache=False, benchmark_epilogue_fusion=True), \
            torch.no_grad(), iso.override(budget_s=budget_s, max_choices=4):
        out = torch.compile(model, mode=MODE)(x)
    torch.testing.assert_close(out, model(x), rtol=3e-2, atol=3e-2)
    events = [e for e in iso.decisions() if e["verified_op"]]
    assert len(events) == 3 and all(e["deferred"] for e in events), events
    for event in events:  # nothing starved by reservations made at lowering time
        assert [n for n in event["timings"] if n not in event["externs"]], event
    spent = events[-1]["budget"]["spent_s"]
    assert spent <= budget_s + max(e["seconds"] for e in events)


def test_compare_runs_on_the_device():
    from torch.utils._python_dispatch import TorchDispatchMode

    from inductor_sm_override.checks.verify import compare

    class Watch(TorchDispatchMode):
        host = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.numel() > 64:
                    self.host.append(str(func))
            return out

    ref = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)
    with Watch() as watch:
        good, bad = compare(ref.clone(), ref), compare(ref + 1, ref)
    assert good.passed and not bad.passed and watch.host == []


def test_local_autotune_cache_file_is_left_alone_in_verified_blocks():
    import json

    from torch._inductor.select_algorithm import AlgorithmSelectorCache

    path = AlgorithmSelectorCache().get_local_cache_path()
    before = path.read_text() if path.is_file() else None
    user = {"system": AlgorithmSelectorCache().system, "cache": {"mm": {"k": {"p": {"h": 1.0}}}}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(user))
    try:
        a, b = _mm(384, 384, 384)
        _compile_mm(a, b, max_choices=2)
        assert json.loads(path.read_text()) == user
    finally:
        if before is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(before)


def test_sole_choice_ops_are_recorded():
    """2.11's __call__ returns only the node for a sole choice (select_algorithm.py:2920)."""
    a, b = _mm(320, 320, 320)
    out, _code, events = _compile_mm(a, b, max_choices=0, budget_s=0)
    assert events and all(e["winner"] for e in events), events
    torch.testing.assert_close(out, a @ b, rtol=2e-2, atol=2e-2)


def test_simulate_sms_covers_direct_property_reads():
    real = torch.cuda.get_device_properties(0).multi_processor_count
    with iso.override(simulate_sms=46, verify=False):
        assert torch.cuda.get_device_properties(0).multi_processor_count == 46
        assert torch.cuda.get_device_properties("cuda").multi_processor_count == 46
    assert torch.cuda.get_device_properties(0).multi_processor_count == real


def test_configs_over_shared_memory_are_pruned_and_recorded():
    """EXHAUSTIVE has configs over any GPU's shared memory (256x256x64, 5 stages, fp16:
    ~320 KB; an H200 allows ~228 KB per block): they are pruned and recorded."""
    a, b = _mm(1024, 1024, 1024)
    _out, _code, events = _compile_mm(a, b, search_space="EXHAUSTIVE", max_choices=2)
    (event,) = events
    assert event["smem_pruned"], event["notes"]
    assert all(n.startswith("config BLOCK") for n in event["smem_pruned"])
    assert not [r for r in event["rejected"].values() if "OutOfResources" in r], event


# --- issue 22, item 2: the fused template kernel the scheduler picks ------------------------

def _ffn(m=256, k=1024, n=4096):
    """An FFN's addmm + GELU: the case where the template wins only by fusing the epilogue."""
    x = torch.randn(m, k, device="cuda", dtype=torch.float16)
    w = torch.randn(k, n, device="cuda", dtype=torch.float16) / k ** 0.5
    bias = torch.randn(n, device="cuda", dtype=torch.float16)
    return x, w, bias


def _compile_ffn(x, w, bias, **settings):
    torch._dynamo.reset()
    iso.clear_decisions()
    fused: list[dict] = []
    events.listeners.append(fused.append)
    fn = torch.compile(lambda x, w, b: torch.nn.functional.gelu(torch.addmm(b, x, w)),
                       mode=MODE)
    with inductor_config.patch({"fx_graph_cache": False, "benchmark_epilogue_fusion": True,
                                "triton.descriptive_names": "original_aten"}), \
            iso.override(**settings):
        out, code = run_and_get_code(fn, x, w, bias)
    events.listeners.remove(fused.append)
    return out, "\n".join(code), [e for e in fused if e.get("event") == "fusion"]


def _ffn_reference(x, w, bias):
    return torch.nn.functional.gelu(torch.addmm(bias.float(), x.float(), w.float())).half()


def test_correct_fused_kernel_is_checked_and_kept():
    x, w, bias = _ffn()
    out, code, checks = _compile_ffn(x, w, bias, max_choices=4)
    assert checks, "the scheduler fused no template with its epilogue"
    assert all(c["passed"] for c in checks), checks
    assert all(c["reference"].startswith("extern") for c in checks)
    assert re.search(r"triton_tem_fused_\w*gelu", code)  # the checked fused kernel runs
    torch.testing.assert_close(out, _ffn_reference(x, w, bias), rtol=2e-2, atol=2e-2)


def test_wrong_fused_kernel_never_runs_and_the_result_is_right():
    x, w, bias = _ffn()
    with inject_fused_faults() as corrupted:
        out, code, checks = _compile_ffn(x, w, bias, max_choices=4)
    assert any(c.startswith("benchmark:") for c in corrupted)  # fusion was tried
    assert checks and not any(c["passed"] for c in checks), checks
    assert all(c["reason"].startswith("mismatch") for c in checks), checks
    assert FUSED_FAULT_MARK not in code  # the corrupted fused kernel is not in the program
    torch.testing.assert_close(out, _ffn_reference(x, w, bias), rtol=2e-2, atol=2e-2)
    recorded = [c for e in iso.decisions() for c in e["fused"]]  # on the GEMM's own record
    assert recorded == [{k: v for k, v in c.items() if k not in ("op", "template")}
                        for c in checks]
    assert {c["op"] for c in checks} <= {"mm", "addmm"}


def test_wrong_fused_kernel_runs_unverified_sanity_baseline():
    x, w, bias = _ffn()
    with inject_fused_faults():
        out, code, checks = _compile_ffn(x, w, bias, max_choices=4, verify=False)
    assert checks == []  # nothing checked outside verified blocks
    assert FUSED_FAULT_MARK in code  # torch fused the (corrupted) epilogue: the fault bites
    assert not torch.allclose(out, _ffn_reference(x, w, bias), rtol=2e-2, atol=2e-2)


# --- issue 27: every fault kind in a fused kernel -------------------------------------------

@pytest.mark.parametrize("kind", ["transpose", "k_tail", "epilogue"])
def test_fused_fault_kinds_never_run_and_the_result_is_right(kind):
    """Source-level faults in the fused template kernel (testing.corrupt_fused; "wrong" is
    the test above; "nan", "raise" and "swap" (square sizes only) are tested on the source
    text in test_inject_faults.py, to keep ``make gpu-check`` within its limit)."""
    x, w, bias = _ffn()
    with inject_fused_faults(kind) as corrupted:
        out, code, checks = _compile_ffn(x, w, bias, max_choices=4)
    if not corrupted:
        pytest.skip(f"the scheduler tried no fusion the {kind!r} fault applies to")
    assert not any(c["passed"] for c in checks), checks  # torch or the check declined it
    assert FUSED_FAULT_MARK not in code
    torch.testing.assert_close(out, _ffn_reference(x, w, bias), rtol=2e-2, atol=2e-2)
