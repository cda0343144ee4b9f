"""The ranking model and the budget arithmetic on synthetic choices (no compile)."""

from __future__ import annotations

import pytest

import inductor_sm_override as iso
from inductor_sm_override.core import budget
from inductor_sm_override.hooks import selector as autotune
from inductor_sm_override.policy.search import Problem, TileConfig, estimate, parse_config, rank


class FakeTemplate:
    def __init__(self, bm, bn, bk=32, warps=4, stages=3, name=None):
        self.name = name or f"triton_mm_{bm}x{bn}x{bk}_w{warps}_s{stages}"
        self.description = (f"ACC_TYPE='tl.float32', ALLOW_TF32=False, BLOCK_K={bk}, "
                            f"BLOCK_M={bm}, BLOCK_N={bn}, EVEN_K=True, GROUP_M=8, "
                            f"num_stages={stages}, num_warps={warps}")


class Opaque:
    def __init__(self, name):
        self.name, self.description = name, "no tile information"


def _extern(name="mm"):
    from torch._inductor.select_algorithm import ExternKernelCaller

    extern = object.__new__(ExternKernelCaller)
    extern.name = name
    extern.description = ""
    return extern


def test_parse_config_reads_inductor_descriptions():
    cfg = parse_config(FakeTemplate(64, 128, 32, 4, 5))
    assert cfg == TileConfig(64, 128, 32, 4, 5)
    assert parse_config(Opaque("cpp_gemm")) is None


def test_skinny_m_prefers_small_row_tiles():
    problem = Problem(m=32, n=4096, k=4096, sms=46)
    choices = [FakeTemplate(128, 128, warps=8), FakeTemplate(64, 128), FakeTemplate(32, 128)]
    ranked = [parse_config(c).block_m for c in rank(choices, problem)]
    assert ranked.index(32) < ranked.index(128) and ranked.index(64) < ranked.index(128)


def test_wave_quantization_on_46_sms():
    # 47 tiles of 128x128 at one CTA per SM: just over a wave, so two waves are paid for.
    cfg = TileConfig(128, 128, 32, 8, 4)
    one_wave = estimate(cfg, Problem(m=46 * 128, n=128, k=1024, sms=46))
    just_over = estimate(cfg, Problem(m=47 * 128, n=128, k=1024, sms=46))
    assert just_over == pytest.approx(2 * one_wave)
    # Among choices for M = 47*128, the 47-tile config ranks below one that fits one wave.
    just_over_choice = FakeTemplate(128, 128, warps=8, stages=4)
    one_wave_choice = FakeTemplate(256, 128, warps=8, stages=3)
    problem = Problem(m=47 * 128, n=128, k=1024, sms=46)
    assert rank([just_over_choice, one_wave_choice], problem)[0] is one_wave_choice
    # On a 132-SM part the same 47 tiles fit one wave: the order follows tile efficiency.
    assert estimate(cfg, Problem(m=47 * 128, n=128, k=1024, sms=132)) == pytest.approx(one_wave)


def test_rank_is_stable_and_unparsed_keep_order_after_parsed():
    a, b = FakeTemplate(64, 64, name="a"), FakeTemplate(64, 64, name="b")
    x, y = Opaque("x"), Opaque("y")
    ranked = rank([x, a, y, b], Problem(m=512, n=512, k=512))
    assert [c.name for c in ranked] == ["a", "b", "x", "y"]
    assert rank([x, a, y], None) == [x, a, y]  # no problem known: original order


def test_preprocess_caps_ranked_templates_and_keeps_every_extern(fake_gpu):
    externs = [_extern("mm"), _extern("bias_addmm")]
    templates = [FakeTemplate(128, 128, warps=8), FakeTemplate(32, 128), Opaque("cpp_x"),
                 FakeTemplate(64, 128)]
    mat1 = type("N", (), {"get_size": lambda self: [32, 4096]})()
    mat2 = type("N", (), {"get_size": lambda self: [4096, 4096]})()
    for t in templates:
        t.layout = type("L", (), {"size": [32, 4096], "dtype": None})()
        t.input_nodes = (mat1, mat2)
    with iso.override(max_choices=2):
        kept = autotune.preprocess([templates[0], externs[0], *templates[1:], externs[1]])
    names = [c.name for c in kept]
    # externs first (all kept), then the two best-ranked templates for M=32: 32- and 64-row
    assert names == ["mm", "bias_addmm", templates[1].name, templates[3].name]
    assert all(getattr(c, autotune.TAG) is getattr(kept[0], autotune.TAG) for c in kept)
    record = getattr(kept[0], autotune.TAG)
    assert record.dropped == {n: "cap" for n in set(c.name for c in templates) - set(names)}


def test_preprocess_without_extern_keeps_one_template_even_at_zero():
    templates = [FakeTemplate(64, 64), FakeTemplate(128, 128)]
    with iso.override(max_choices=0):
        kept = autotune.preprocess(templates)
    assert len(kept) == 1
    assert "no extern choice" in getattr(kept[0], autotune.TAG).notes[0]


def test_preprocess_is_inert_outside_a_block():
    templates = [FakeTemplate(64, 64), FakeTemplate(128, 128)]
    assert autotune.preprocess(templates) is templates


def test_budget_first_op_gets_a_conservative_share():
    b = budget.Budget(10.0)
    allowed, reserved = b.allowance(100)
    assert allowed == int(10.0 * budget.FIRST_OP_SHARE // budget.PRIOR_S_PER_CHOICE) - 1
    small = budget.Budget(2 * budget.PRIOR_S_PER_CHOICE)
    assert small.allowance(100)[0] == 1  # a small budget still tries one template first
    assert budget.Budget(0.9 * budget.PRIOR_S_PER_CHOICE).allowance(100)[0] == 0
    assert reserved == pytest.approx((allowed + 1) * budget.PRIOR_S_PER_CHOICE)
    assert b.remaining == pytest.approx(10.0 - reserved)


def test_budget_learns_cost_and_stops_when_spent():
    b = budget.Budget(10.0)
    _allowed, reserved = b.allowance(4)
    b.settle(reserved, elapsed=2.0, choices_run=4)  # 0.5 s per choice measured
    assert b.per_choice == pytest.approx(0.5)
    allowed, reserved = b.allowance(100)
    assert allowed == int(8.0 // 0.5) - 1  # the rest of the budget, minus the extern
    b.settle(reserved, elapsed=8.5, choices_run=allowed + 1)
    assert b.allowance(100) == (0, 0.0)  # spent: extern only from now on


def test_budget_zero_and_inner_blocks_share_the_outer_budget():
    from inductor_sm_override.core import state

    assert budget.Budget(0).allowance(10) == (0, 0.0)
    with iso.override(budget_s=5):
        outer = state.current_budget()
        with iso.override(max_choices=3):
            assert state.current_budget() is outer  # one budget for the whole block
        with iso.override(budget_s=1):
            assert state.current_budget() is not outer
        assert state.current_budget() is outer
    assert state.current_budget() is None
