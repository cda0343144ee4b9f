"""The GPU code paths of issue 14 (and 16 A, C), reached on the CPU through Inductor's real
autotuner (selector_harness: real ``__call__``, ``do_autotuning``, ``AutotuneArgs``,
``MultiTemplateBuffer``, feedback savers) with hand-made choices."""

from __future__ import annotations

import json

import pytest
import torch
from selector_harness import (
    Template,
    boxed,
    compiling,
    extern,
    lowering,
    quiet_logging,
    run_deferred,
    select,
    split_k_mm,
    subgraph_choice,
    transposed_mm,
)
from torch._inductor import config
from torch._inductor.select_algorithm import AlgorithmSelectorCache

import inductor_sm_override as iso
from inductor_sm_override.checks.verify import compare
from inductor_sm_override.core import state
from inductor_sm_override.hooks import selector as autotune
from inductor_sm_override.torch_plan import compat


@pytest.fixture(autouse=True)
def _harness(monkeypatch):
    iso.clear_decisions()
    with quiet_logging(monkeypatch):
        yield


def _event(name=None):
    events = [e for e in iso.decisions() if name is None or e["name"] == name]
    assert len(events) == 1, iso.decisions()
    return events[0]


# --- 1. ops outside the GEMM family, and GEMMs without any reference ----------------------

def test_flex_attention_like_op_without_extern_compiles_under_verify():
    with lowering() as (a, b, layout), iso.override(verify=True, max_choices=1):
        fast = Template("flex_fast", [a, b], layout, ms=0.1)
        slow = Template("flex_slow", [a, b], layout, ms=0.2)
        select("flex_attention", [slow, fast], a, b, layout)  # no NoValidChoicesError
    event = _event()
    assert event["winner"] == "flex_fast" and event["rejected"] == {}
    assert event["kept"] == ["flex_slow", "flex_fast"]  # not capped: untouched
    assert event["verified_op"] is False
    assert any("unverified: no reference" in n for n in event["notes"])


def test_gemm_without_extern_or_reference_does_not_fail_the_op():
    # addmm has no fp64 reference (alpha/beta are not in the inputs) and no extern here
    with lowering() as (a, b, layout), iso.override(verify=True):
        select("addmm", [Template("t1", [a, b], layout, ms=0.2),
                         Template("t2", [a, b], layout, ms=0.1)], a, b, layout)
    event = _event()
    assert event["winner"] == "t2" and event["rejected"] == {}
    assert event["unverified"] == {"t1": "no reference", "t2": "no reference"}
    assert any("no extern choice" in n for n in event["notes"])


def test_gemm_without_extern_is_verified_against_fp64():
    with lowering() as (a, b, layout), iso.override(verify=True):
        good = Template("good", [a, b], layout, ms=0.2)
        bad = Template("bad", [a, b], layout, ms=0.1, wrong=True)
        node = select("mm", [bad, good], a, b, layout)
    assert node.get_name() == "out_good"  # the wrong, faster kernel is not used
    event = _event()
    assert event["winner"] == "good" and "mismatch vs fp64" in event["rejected"]["bad"]


# --- 2. a timing that bypassed benchmark_choice (subprocess / CUTLASS paths) --------------

def _subprocess_benchmarks(monkeypatch, claim_ms=1e-6):
    """Template timings made the way torch's subprocess benchmarking makes them: the
    template runs on its own tensors, never through ``benchmark_choice``."""
    from torch._inductor import autotune_process

    def in_subprocess(choices, *args, **kwargs):
        timings = {}
        for choice in choices:
            x, y = torch.randn(16, 16), torch.randn(16, 16)
            choice.benchmark(x, y, out=torch.empty(16, 16))
            timings[choice] = claim_ms
        return timings

    monkeypatch.setattr(autotune_process, "benchmark_in_sub_process", in_subprocess)
    monkeypatch.setattr(autotune_process, "get_tuning_process_pool", lambda: None)


def test_template_timed_outside_the_check_is_removed(monkeypatch):
    _subprocess_benchmarks(monkeypatch)
    with lowering() as (a, b, layout), iso.override(verify=True):
        bad = Template("sub_bad", [a, b], layout, wrong=True)
        # code inside the compile switches subprocess benchmarking back on after the
        # settings switched it off: the template is timed where no check runs
        select("mm", [extern(a, b, layout), bad], a, b, layout,
               in_compile={"autotune_in_subproc": True})
    event = _event()
    assert event["winner"] == "mm"
    assert event["rejected"]["sub_bad"] == autotune.UNVERIFIED_PATH
    assert event["timings"]["sub_bad"] is None


def test_unverified_block_keeps_torchs_timings(monkeypatch):
    _subprocess_benchmarks(monkeypatch)
    with lowering() as (a, b, layout), iso.override(verify=False), \
            config.patch(autotune_in_subproc=True):
        select("mm", [extern(a, b, layout), Template("sub", [a, b], layout)], a, b, layout)
    assert _event()["winner"] == "sub"  # verify=False: torch's behaviour


# --- 3. decompose_k (SubgraphChoiceCaller) is a template, not a reference -----------------
# Torch's own SubgraphChoiceCaller: its benchmark never writes ``out`` (2.11
# codegen/subgraph.py:169-182, 2.13 :288-305), so it is checked by what it computes.

def _op_offering(choice_name):
    """The op that offered this choice (a subgraph's own compile records its inner ops)."""
    (event,) = [e for e in iso.decisions() if choice_name in e["offered"]]
    return event


needs_subgraph = pytest.mark.skipif(
    __import__("selector_harness").SubgraphChoiceCaller is None, reason="no SubgraphChoiceCaller")


@needs_subgraph
def test_subgraph_choice_is_capped():
    with lowering(cpp=True) as (a, b, layout), iso.override(max_choices=0):
        a, b = boxed(a, b)
        choices = [extern(a, b, layout), subgraph_choice("decompose_k_mm_4_split", [a, b], layout)]
        select("mm", choices, a, b, layout)
    event = _event()
    assert event["capped"] == ["decompose_k_mm_4_split"] and event["kept"] == ["mm"]
    assert event["externs"] == ["mm"]


@needs_subgraph
def test_correct_subgraph_choice_passes_its_check():
    """Its ``out`` stays as torch's zero_() left it: a check of that window rejects every
    decompose_k choice (issue 22, item 1); its real output passes."""
    with lowering(cpp=True) as (a, b, layout), iso.override(verify=True):
        a, b = boxed(a, b)
        split = subgraph_choice("decompose_k_like", [a, b], layout, split_k_mm)
        select("mm", [extern(a, b, layout), split], a, b, layout)
    event = _op_offering("decompose_k_like")  # the subgraph's own bmm is an op of its own
    assert event["rejected"] == {}, event["rejected"]
    check = event["checks"]["decompose_k_like"]
    assert check["passed"] is True and check["reference"] == "extern mm"
    assert check["max_abs"] < 1e-4
    assert event["timings"]["decompose_k_like"] is not None


@needs_subgraph
def test_wrong_subgraph_choice_is_rejected_not_used_as_reference():
    with lowering(cpp=True) as (a, b, layout), iso.override(verify=True):
        a, b = boxed(a, b)
        choices = [subgraph_choice("decompose_k_bad", [a, b], layout, transposed_mm),
                   extern(a, b, layout)]
        node = select("mm", choices, a, b, layout)
    event = _op_offering("decompose_k_bad")
    assert "mismatch vs extern mm" in event["rejected"]["decompose_k_bad"]
    assert event["checks"]["decompose_k_bad"]["passed"] is False
    assert event["winner"] == "mm" and event["timings"]["decompose_k_bad"] is None
    assert "decompose_k" not in str(node)


# --- 4. budget under deferred autotuning (MultiTemplateBuffer) ----------------------------

_RELEASE = tuple(int(p) for p in compat.torch_release(torch.__version__).split("."))
needs_deferred_on_cpu = pytest.mark.skipif(
    _RELEASE < (2, 10), reason="torch < 2.10 never defers CPU ops (select_algorithm checks "
    "layout.device.type == 'cpu'); the GPU test covers it there")


@needs_deferred_on_cpu
def test_deferred_ops_get_their_budget_when_benchmarked():
    from inductor_sm_override.core.budget import PRIOR_S_PER_CHOICE

    with lowering() as (a, b, layout), iso.override(budget_s=6 * PRIOR_S_PER_CHOICE):
        budget = state.current_budget()
        ops = []
        for i in range(3):  # lowering: three GEMMs become multi-template buffers
            templates = [Template(f"op{i}_t{j}", [a, b], layout, ms=0.01) for j in range(4)]
            ops.append((select("mm", [extern(a, b, layout), *templates], a, b, layout,
                               deferred=True), templates))
        assert budget.reserved == 0.0 and budget.spent == 0.0  # nothing planned at lowering
        for node, _templates in ops:  # the scheduler benchmarks them, one after the other
            run_deferred(node)
        assert budget.reserved == 0.0
    events = iso.decisions()
    assert len(events) == 3 and all(e["deferred"] for e in events)
    for event, (_node, templates) in zip(events, ops, strict=True):
        benchmarked = [t for t in templates if t.benchmarked]
        assert benchmarked, f"{event['name']} got no template: {event['budget_dropped']}"
    # measured costs are tiny, so the later ops get all their templates
    assert all(t.benchmarked for t in ops[-1][1])


@needs_deferred_on_cpu
def test_deferred_timings_never_hold_rejected_choices():
    with lowering() as (a, b, layout), iso.override(verify=True):
        bad = Template("fast_wrong", [a, b], layout, ms=1e-6, wrong=True)
        good = Template("good", [a, b], layout, ms=1.0)
        node = select("mm", [extern(a, b, layout), bad, good], a, b, layout, deferred=True)
        timings = run_deferred(node)
    assert bad not in timings and good in timings
    event = _event()
    assert event["deferred"] and "fast_wrong" in event["rejected"]


def test_budget_reservation_is_released_when_the_op_raises():
    from torch._inductor.select_algorithm import NoValidChoicesError

    class Broken(Template):
        def benchmark(self, *args, out):
            raise RuntimeError("kernel failed")

    with lowering() as (a, b, layout), iso.override(budget_s=10):
        budget = state.current_budget()
        with pytest.raises(NoValidChoicesError):  # torch's answer when every choice fails
            select("mm", [Broken("x", [a, b], layout), Broken("y", [a, b], layout)],
                   a, b, layout)
        assert budget.reserved == 0.0 and budget.spent > 0.0


# --- 5. output with a layout offset ------------------------------------------------------

def test_output_with_layout_offset_is_read_through_the_offset_view():
    with lowering(offset=24) as (a, b, layout), iso.override(verify=True):
        good = Template("offset_ok", [a, b], layout, ms=1e-6)
        select("mm", [extern(a, b, layout), good], a, b, layout)
    event = _event()
    assert event["rejected"] == {} and event["checks"]["offset_ok"]["passed"] is True
    assert event["winner"] == "offset_ok"


@pytest.mark.parametrize("offset", [0, 24])
def test_template_that_writes_nothing_is_rejected(offset):
    # the check must read neither the previous choice's (the extern's) output nor the
    # zeros torch's benchmark_choice writes before the kernel: the window holds NaN
    with lowering(offset=offset) as (a, b, layout), iso.override(verify=True):
        lazy = Template("writes_nothing", [a, b], layout, ms=1e-6, writes=False)
        select("mm", [extern(a, b, layout), lazy], a, b, layout)
    reason = _event()["rejected"]["writes_nothing"]
    assert reason.startswith("mismatch vs extern mm: 256 NaN/Inf values"), reason


@pytest.mark.parametrize("offset", [0, 24])
def test_template_kernel_starts_on_a_window_full_of_nan(offset):
    """SAFETY.md's claim: the window the check reads holds NaN when the kernel starts,
    after torch's ``output.zero_()`` (2.11 select_algorithm.py:3724, 2.13 :4846)."""
    with lowering(offset=offset) as (a, b, layout), iso.override(verify=True):
        template = Template("t", [a, b], layout)
        select("mm", [extern(a, b, layout), template], a, b, layout)
    assert template.window_at_start is not None
    assert bool(template.window_at_start.isnan().all())
    assert "benchmark" not in vars(template)  # the shim is gone after the call
    assert _event()["checks"]["t"]["passed"] is True


# --- 6. the on-disk autotune cache ---------------------------------------------------------

def test_verified_block_leaves_the_local_autotune_cache_file_alone():
    cache = AlgorithmSelectorCache()
    path = cache.get_local_cache_path()
    before = path.read_text() if path.is_file() else None
    user = {"system": cache.system, "cache": {"mm": {"user": {"highest": {"k": 1.0}}}}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(user))
    try:
        with lowering() as (a, b, layout), iso.override(verify=True):
            choices = [extern(a, b, layout), Template("t", [a, b], layout)]
            cache.lookup(choices, "mm", "key", lambda cs: {c: 1.0 for c in cs})
        assert json.loads(path.read_text()) == user
        with lowering() as (a, b, layout):  # outside a block torch writes as before
            cache.lookup([Template("t", [a, b], layout)], "mm", "key2",
                         lambda cs: {c: 1.0 for c in cs})
        assert json.loads(path.read_text()) != user
    finally:
        if before is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(before)


# --- 7 / 16-A. ops Inductor picks without benchmarking ------------------------------------

def test_sole_choice_op_is_recorded_and_settles_the_budget():
    with lowering() as (a, b, layout), iso.override(max_choices=0, budget_s=0):
        budget = state.current_budget()
        select("mm", [extern(a, b, layout), Template("t", [a, b], layout)], a, b, layout)
        assert budget.reserved == 0.0
    event = _event()
    assert event["winner"] == "mm" and event["kept"] == ["mm"]


@pytest.mark.skipif(not hasattr(config, "deterministic"), reason="no config.deterministic")
def test_deterministic_pick_is_recorded():
    with lowering() as (a, b, layout), iso.override(verify=True), \
            config.patch(deterministic=True):
        select("mm", [extern(a, b, layout), Template("t", [a, b], layout)], a, b, layout)
    assert _event()["winner"] == "mm"


def test_node_only_result_closes_the_record():
    """torch 2.9-2.12 return only the node from __call__ (2.11 select_algorithm.py:2920)."""
    from inductor_sm_override.hooks.selector import _selector_call

    with lowering() as (a, b, layout), iso.override(max_choices=0):
        selector = AlgorithmSelectorCache()
        raw = vars(AlgorithmSelectorCache)["__call__"]
        original = getattr(raw, "__wrapped__", raw)

        def node_only(name, choices, input_nodes, layout, **kwargs):  # the 2.11 layout
            result = original(selector, name, choices, input_nodes, layout, **kwargs)
            return result[0] if isinstance(result, tuple) else result

        choices = [extern(a, b, layout), Template("t", [a, b], layout)]
        _selector_call(node_only, selector, ("mm", choices, [a, b], layout), {})
    event = _event()
    assert event["winner"] == "mm" and event["capped"] == ["t"]


@needs_deferred_on_cpu
def test_unpack_selection_on_both_layouts():
    with lowering() as (a, b, layout), iso.override():
        node = select("mm", [extern(a, b, layout), Template("t", [a, b], layout)], a, b,
                      layout, deferred=True)
        assert compat.unpack_selection(node).deferred  # 2.11: the TensorBox alone
        assert compat.unpack_selection((node, None)).deferred  # 2.13
        run_deferred(node)
        plain = compat.unpack_selection((object(), "choice"))
        assert plain.choice == "choice" and not plain.deferred


# --- 8. the comparison runs where the tensors are, in float32 ------------------------------

def test_compare_makes_no_full_size_float64_copy():
    from torch.utils._python_dispatch import TorchDispatchMode

    class Watch(TorchDispatchMode):
        big = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor) and t.numel() >= 4096 and \
                        t.dtype == torch.float64:
                    self.big.append(str(func))
            return out

    ref = torch.randn(64, 64, dtype=torch.float16)
    with Watch() as watch:
        check = compare(ref.clone(), ref)
    assert check.passed and watch.big == []


def test_compare_keeps_float64_and_exact_integer_precision():
    ref = torch.randn(32, 32, dtype=torch.float64)
    assert not compare(ref * (1 + 1e-5), ref).passed  # fp64 tolerance is 1e-7
    big = torch.full((4,), 2**30, dtype=torch.int32)
    assert not compare(big + 1, big).passed  # fp32 could not tell these apart


# --- 9. shared memory ----------------------------------------------------------------------

def test_torch_shared_memory_pruning_is_on_in_blocks_and_recorded(fake_gpu):
    if not hasattr(config, "max_autotune_prune_choices_based_on_shared_mem"):
        pytest.skip("this torch has no shared-memory pruning switch")
    from torch._inductor.template_heuristics.triton import CUDAConfigHeuristic

    heuristic = CUDAConfigHeuristic()
    configs = list(heuristic.mm_configs)
    before = config.max_autotune_prune_choices_based_on_shared_mem  # on by default in 2.9
    with config.patch(max_autotune_prune_choices_based_on_shared_mem=False), iso.override(), \
            compiling():  # a compile in it
        assert config.max_autotune_prune_choices_based_on_shared_mem is True
        kept = heuristic._prune_exceeding_max_shared_mem_configs(configs, 2)
        record = autotune.OpRecord(name="mm", settings=state.current())
        record.take_pending()
    assert config.max_autotune_prune_choices_based_on_shared_mem == before
    pruned = [n for n, why in record.dropped.items() if why == "smem"]
    assert len(pruned) == len(configs) - len(kept) > 0
    assert "config BLOCK 64x128x128 stages=4 warps=4" in pruned  # 192 KB > 99 KB


def test_ranking_model_prunes_where_torch_cannot(fake_gpu, monkeypatch):
    monkeypatch.setattr(autotune, "_torch_prunes_smem", lambda: False)

    class Node:
        def __init__(self, size):
            self.size = size

        def get_size(self):
            return self.size

    big = Template.__new__(Template)
    small = Template.__new__(Template)
    for t, (bm, bk, st) in ((big, (128, 128, 4)), (small, (64, 32, 3))):
        t.name = f"triton_mm_{bm}_{bk}_{st}"
        t.description = f"BLOCK_K={bk}, BLOCK_M={bm}, BLOCK_N={bm}, num_stages={st}"
        t.layout = type("L", (), {"size": [512, 512], "dtype": torch.float16})()
        t.input_nodes = (Node([512, 512]), Node([512, 512]))
    with iso.override(verify=False):
        record = autotune.OpRecord(name="mm", settings=state.current(), device="cuda:0",
                                   sms=46, gemm=True)
        token = autotune._CURRENT_OP.set(record)
        try:
            kept = autotune.preprocess([big, small])
        finally:
            autotune._CURRENT_OP.reset(token)
    assert kept == [small] and record.dropped == {big.name: "smem"}
    assert record.as_event()["smem_pruned"] == [big.name]


# --- 11. simulate_sms and direct reads of multi_processor_count ----------------------------

def test_simulate_sms_covers_direct_cuda_property_reads():
    from inductor_sm_override.testing import fake_cuda_device

    with fake_cuda_device(132):
        assert torch.cuda.get_device_properties("cuda").multi_processor_count == 132
        with iso.override(simulate_sms=46):
            props = torch.cuda.get_device_properties("cuda")
            assert props.multi_processor_count == 46  # flex_decoding.py reads this
            assert props.max_threads_per_multi_processor == 1536  # the rest is real
        assert torch.cuda.get_device_properties("cuda").multi_processor_count == 132


# --- 16-C. fault injection without AlgorithmSelectorCache._is_extern (torch 2.9) -----------

def test_inject_faults_without_torchs_is_extern(monkeypatch):
    from torch._inductor import select_algorithm

    from inductor_sm_override.testing import inject_faults

    if "_is_extern" in vars(AlgorithmSelectorCache):
        monkeypatch.delattr(AlgorithmSelectorCache, "_is_extern")  # the 2.9 layout
    with lowering() as (a, b, layout), inject_faults("t_") as corrupted:
        cache = compat.selector_cache(select_algorithm)
        hooks = cache.preprocessing_fns if compat.has_preprocessing_hook(cache) else \
            autotune.extra_preprocessing_fns  # torch 2.8
        corrupt = hooks[0]
        out = corrupt([extern(a, b, layout), Template("t_x", [a, b], layout)])
    assert corrupted == ["t_x"] and out[0].name == "mm"


@pytest.mark.parametrize("verify", [True, False])
def test_fault_injection_through_the_real_selector(verify):
    """On every release (2.8 included, which has no preprocessing-fn hook): a corrupted,
    fastest template is rejected when verified, and wins when not (the baseline)."""
    from inductor_sm_override.testing import inject_faults

    with lowering() as (a, b, layout), inject_faults("t_", "wrong") as corrupted, \
            iso.override(verify=verify):
        node = select("mm", [extern(a, b, layout), Template("t_fast", [a, b], layout)],
                      a, b, layout)
    assert corrupted == ["t_fast"]
    event = _event()
    if verify:
        assert "mismatch vs extern mm" in event["rejected"]["t_fast"]
        assert event["winner"] == "mm" and node.get_name() != "out_t_fast"
    else:
        assert event["winner"] == "t_fast" and event["rejected"] == {}


@needs_subgraph
def test_benchmarked_as_extern_follows_torch_on_each_layout(monkeypatch):
    with lowering(cpp=True) as (a, b, layout):
        a, b = boxed(a, b)
        ext, tmpl = extern(a, b, layout), Template("t", [a, b], layout)
        sub = subgraph_choice("decompose_k_like", [a, b], layout)
        assert compat.benchmarked_as_extern(ext) and not compat.benchmarked_as_extern(tmpl)
        assert compat.benchmarked_as_extern(sub)  # torch hands it the extern tensors
        assert compat.is_reference(ext) and not compat.is_reference(tmpl)
        assert not compat.is_reference(sub)  # ...but it is checked like a template
        if "_is_extern" in vars(AlgorithmSelectorCache):
            monkeypatch.delattr(AlgorithmSelectorCache, "_is_extern")  # the 2.9 layout
        assert compat.benchmarked_as_extern(ext) and not compat.benchmarked_as_extern(tmpl)
        assert compat.benchmarked_as_extern(sub)  # the fallback branch exists for it
