"""Choice generation is capped before Inductor renders templates, and charged to the
budget (issue 22, item 5): torch's real ``InductorChoices`` with its real CUDA config
heuristics, on a faked 46-SM GPU (nothing is compiled)."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch._inductor import config, ir
from torch._inductor.graph import GraphLowering
from torch._inductor.virtualized import V

import inductor_sm_override as iso
from inductor_sm_override.core import state
from inductor_sm_override.core.records import OpRecord
from inductor_sm_override.hooks import generation
from inductor_sm_override.policy import search

choices_module = pytest.importorskip("torch._inductor.choices")
if "_finalize_template_configs" not in vars(choices_module.InductorChoices):
    pytest.skip("this torch generates choices elsewhere", allow_module_level=True)

from torch._inductor.kernel.mm import aten_mm, mm_template  # noqa: E402
from torch._inductor.kernel_inputs import MMKernelInputs  # noqa: E402


@contextlib.contextmanager
def _gemm(m=512, n=1024, k=256, space="EXHAUSTIVE"):
    """A CUDA fp16 GEMM's kernel inputs, and torch's own KernelTemplateChoices for it."""
    graph = GraphLowering(torch.fx.symbolic_trace(lambda x: x + 1))
    cuda = torch.device("cuda", 0)
    with V.set_graph_handler(graph), config.patch(max_autotune=True,
                                                  max_autotune_gemm_search_space=space):
        a = ir.InputBuffer(name="a", layout=ir.FixedLayout(cuda, torch.float16, [m, k]))
        b = ir.InputBuffer(name="b", layout=ir.FixedLayout(cuda, torch.float16, [k, n]))
        inputs = MMKernelInputs([a, b])

        def ktcs():
            chooser = choices_module.InductorChoices()
            if _has_triton():  # torch's own CUDA config heuristics
                return {t.uid: chooser.get_ktc(inputs, t, "mm") for t in (aten_mm, mm_template)}
            # torch without triton (the CPU build) cannot make Triton configs: the same
            # KernelTemplateChoice objects over a grid like EXHAUSTIVE's
            return {aten_mm.uid: iter([_ktc(aten_mm, {}, inputs)]),
                    mm_template.uid: (_ktc(mm_template, cfg, inputs) for cfg in _GRID)}

        yield inputs, ktcs


_GRID = [dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_stages=st, num_warps=w)
         for bm in (16, 32, 64, 128, 256) for bn in (16, 32, 64, 128, 256)
         for bk in (16, 32, 64, 128) for st in (1, 2, 3, 4, 5) for w in (2, 4, 8)]


def _has_triton():
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _ktc(template, params, inputs):
    from torch._inductor.kernel_template_choice import KernelTemplateChoice
    from torch._inductor.template_heuristics.params import DictKernelTemplateParams

    return KernelTemplateChoice(template, DictKernelTemplateParams(params), {},
                                inputs.output_layout(), inputs)


def _finalize(inputs, ktcs, op="mm"):
    chooser = choices_module.InductorChoices()
    return chooser._finalize_template_configs(ktcs(), inputs, [aten_mm, mm_template], op)


def _pending_record():
    record = OpRecord(name="mm", settings=state.current())
    record.take_pending()
    return record


def _estimate(ktc, problem):
    return search.estimate(search.parse_config(generation._describe(ktc)), problem)


def test_max_choices_caps_generation_to_the_best_ranked_configs(fake_gpu):
    with _gemm() as (inputs, ktcs):
        with iso.override(verify=False):  # a block without a cap (smem pruning is on)
            everything = _finalize(inputs, ktcs)
        templates = [k for k in everything if k.template is mm_template]
        assert len(templates) > 100  # EXHAUSTIVE
        with iso.override(max_choices=3, verify=False):
            kept = _finalize(inputs, ktcs)
            record = _pending_record()
    kept_templates = [k for k in kept if k.template is mm_template]
    assert [k.template for k in kept if k.template is aten_mm] == [aten_mm]  # extern kept
    assert len(kept_templates) == 3 + 4
    assert all("_choice" not in vars(k) for k in kept)  # nothing was rendered
    problem = search.problem_from(inputs.output_layout(), inputs.nodes(), 46)
    worst_kept = max(_estimate(k, problem) for k in kept_templates)
    assert all(_estimate(k, problem) >= worst_kept
               for k in templates if generation.config_label(k) in record.dropped)
    labels = {generation.config_label(k) for k in templates}
    assert set(record.dropped) | {generation.config_label(k) for k in kept_templates} == labels
    assert set(record.dropped.values()) == {"cap"}
    assert any("not generated" in n for n in record.notes)


def test_spent_budget_generates_no_template(fake_gpu):
    with _gemm() as (inputs, ktcs), iso.override(budget_s=0):
        kept = _finalize(inputs, ktcs)
        record = _pending_record()
    assert [k.template for k in kept] == [aten_mm]
    assert set(record.dropped.values()) == {"budget"}


def test_budget_bounds_what_is_generated(fake_gpu):
    from inductor_sm_override.core.budget import PRIOR_S_PER_CHOICE

    with _gemm() as (inputs, ktcs), iso.override(budget_s=5 * PRIOR_S_PER_CHOICE):
        kept = _finalize(inputs, ktcs)
    assert len([k for k in kept if k.template is mm_template]) == 10  # 2 x 5 affordable


def test_without_cap_or_budget_or_outside_the_gemm_family_nothing_changes(fake_gpu):
    with _gemm() as (inputs, ktcs):
        with iso.override(verify=False):
            plain = len(_finalize(inputs, ktcs))
        with iso.override(verify=True):
            assert len(_finalize(inputs, ktcs)) == plain
        with iso.override(max_choices=1):
            assert len(_finalize(inputs, ktcs, op="flex_attention")) == plain


def test_generation_time_is_charged_to_the_budget():
    """The real get_template_configs of a CPU mm (ATen only here): its time is spent."""
    graph = GraphLowering(torch.fx.symbolic_trace(lambda x: x + 1))
    cpu = torch.device("cpu")
    with V.set_graph_handler(graph), iso.override(budget_s=100):
        a = ir.InputBuffer(name="a", layout=ir.FixedLayout(cpu, torch.float32, [16, 16]))
        b = ir.InputBuffer(name="b", layout=ir.FixedLayout(cpu, torch.float32, [16, 16]))
        budget = state.current_budget()
        choices = V.choices.get_template_configs(MMKernelInputs([a, b]), [aten_mm], "mm")
        assert [c.name for c in choices] == ["mm"]
        record = _pending_record()
    assert budget.spent > 0 and record.generate_s == pytest.approx(budget.spent)
    assert record.as_event()["generate_s"] > 0
