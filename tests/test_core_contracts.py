"""Contracts a one-line bug would break (issue 27): PatchSet, Budget, the settings key, the
fail-closed saver. Fast, no compile: each targets one module (``make mutation`` runs them)."""

from __future__ import annotations

import math
import types

import pytest

import inductor_sm_override as iso
from inductor_sm_override.core.budget import PRIOR_S_PER_CHOICE, Budget
from inductor_sm_override.core.patching import Append, Patch, PatchSet
from inductor_sm_override.core.settings import NOT_COMPILED, Settings, settings_key

# --- PatchSet ------------------------------------------------------------------------------


def _target():
    return types.SimpleNamespace(attr="original", hooks=[])


def test_a_stray_release_does_nothing_and_does_not_underflow():
    target = _target()
    patches = PatchSet(lambda: [Patch(target, "attr", "patched")])
    patches.release()  # never acquired
    assert patches.count == 0 and target.attr == "original"
    patches.acquire()
    assert target.attr == "patched"
    patches.release()
    patches.release()  # one too many
    assert patches.count == 0 and not patches.installed and target.attr == "original"
    patches.acquire()  # still works: the count did not go negative
    assert patches.count == 1 and target.attr == "patched"
    patches.release()
    assert target.attr == "original"


def test_one_attribute_patched_twice_comes_back_exactly():
    target = _target()
    original = vars(target)["attr"]
    patches = PatchSet(lambda: [Patch(target, "attr", "first"), Patch(target, "attr", "second"),
                                Append(target, "hooks", "hook")])
    patches.acquire()
    patches.acquire()
    assert target.attr == "second" and target.hooks == ["hook"] and patches.count == 2
    patches.release()
    assert target.attr == "second"  # still held once
    patches.release()
    assert vars(target)["attr"] is original and target.hooks == []


def test_a_patch_of_a_missing_attribute_is_deleted_again():
    target = _target()
    patches = PatchSet(lambda: [Patch(target, "added", 1)])
    patches.acquire()
    assert target.added == 1
    patches.release()
    assert not hasattr(target, "added")


def test_a_failing_build_leaves_nothing_behind():
    target = _target()

    def build():
        yield Patch(target, "attr", "patched")
        raise RuntimeError("half-way")

    patches = PatchSet(build)
    with pytest.raises(RuntimeError):
        patches.acquire()
    assert target.attr == "original" and patches.count == 0 and not patches.installed


def test_edges_run_on_install_and_uninstall_only():
    edges = []
    patches = PatchSet(lambda: [], on_edge=lambda: edges.append(1))
    patches.acquire()
    patches.acquire()
    patches.release()
    assert edges == [1]
    patches.release()
    assert edges == [1, 1]


# --- Budget --------------------------------------------------------------------------------

def test_an_op_that_ran_in_zero_seconds_teaches_nothing():
    budget = Budget(10.0)
    allowed, reserved = budget.allowance(4)
    budget.settle(reserved, 0.0, allowed + 1)
    assert budget.per_choice == PRIOR_S_PER_CHOICE  # no division by zero, no free choices
    assert budget.smallest_unit == math.inf and budget.spent == 0.0 and budget.reserved == 0.0
    assert budget.allowance(1000)[0] < 1000  # still bounded by the prior cost


def test_settle_releases_the_reservation_and_charges_what_it_took():
    budget = Budget(10.0)
    allowed, reserved = budget.allowance(3)
    assert allowed >= 1 and math.isclose(budget.remaining, 10.0 - reserved)
    budget.settle(reserved, 2.0, allowed + 1)
    assert budget.reserved == 0.0 and budget.spent == 2.0
    assert math.isclose(budget.per_choice, 2.0 / (allowed + 1))
    assert budget.smallest_unit == 2.0
    budget.settle(0.0, 12.0, 1)
    assert budget.allowance(5) == (0, 0.0)  # spent: nothing more


def test_the_first_op_plans_only_a_share_of_the_budget():
    allowed, reserved = Budget(100.0).allowance(1000)
    assert reserved <= 100.0 * 0.5 + 1e-9 and allowed == int(50.0 // PRIOR_S_PER_CHOICE) - 1


# --- the settings key ----------------------------------------------------------------------

OTHER = {"min_sms": 40, "max_choices": 4, "budget_s": 30.0, "verify": False, "rtol": 0.5,
         "atol": 0.5, "report": "r.jsonl", "simulate_sms": 46, "strict": True,
         "search_space": "EXHAUSTIVE", "quiet": True, "require_manifest": True, "fleet": "node",
         "fleet_timeout_s": 5.0}


@pytest.mark.parametrize("field", Settings.field_names())
def test_every_field_that_changes_code_changes_the_key(field):
    assert field in OTHER, f"new setting {field!r}: give it a value here (and decide its key)"
    base, other = Settings(), Settings(**{field: OTHER[field]})
    if field in NOT_COMPILED:
        assert settings_key(other) == settings_key(base)
    else:
        assert settings_key(other) != settings_key(base)
        assert f"{field}=" in settings_key(other)


def test_the_key_is_stable_and_never_the_untagged_one():
    assert settings_key(Settings(max_choices=4)) == settings_key(Settings(max_choices=4))
    assert settings_key(None) != settings_key(Settings())
    assert iso.__version__ in settings_key(Settings())


# --- fail closed: a template without a reference beside an extern --------------------------

def test_a_template_without_a_reference_leaves_when_an_extern_remains():
    from selector_harness import Template, extern, lowering

    from inductor_sm_override.core.records import OpRecord
    from inductor_sm_override.hooks import selector

    with lowering() as (a, b, layout):
        ref, template = extern(a, b, layout), Template("t_unchecked", [a, b], layout)
        checked = Template("t_checked", [a, b], layout)
        record = OpRecord(name="baddbmm", settings=Settings(), gemm=True, verified_op=True)
        record.checks = {"t_unchecked": {"passed": None, "reason": "no reference"},
                         "t_checked": {"passed": True}}
        timings = {ref: 1.0, template: 0.1, checked: 0.5}
        selector._fail_closed(record, timings)
        assert timings == {ref: 1.0, checked: 0.5}
        assert record.unverified == {"t_unchecked": "no reference: removed (an extern remains)"}
        alone = {template: 0.1}  # nothing to fall back on: torch's pick stands, noted
        selector._fail_closed(record, alone)
        assert alone == {template: 0.1}
        assert "unverified: no reference and no extern choice" in record.notes[-1]
        timed = Template("t_timed", [a, b], layout)  # finite timing, never checked: removed
        bypass = {ref: 1.0, timed: 0.1}
        selector._fail_closed(record, bypass)
        assert bypass == {ref: 1.0} and record.rejected["t_timed"] == selector.UNVERIFIED_PATH
