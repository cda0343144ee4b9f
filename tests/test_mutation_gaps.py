"""Behaviour that `make mutation` (docs/mutation.md) found untested: each test kills mutants
that survived the rest of the fast suite. Plain unit tests, no compile, no subprocess."""

from __future__ import annotations

import pytest

from inductor_sm_override.core.budget import PRIOR_S_PER_CHOICE, Budget

# --- core/budget.py --------------------------------------------------------------------------


def test_first_op_share_is_the_larger_of_half_the_budget_and_two_prior_choices():
    # 2 s, nothing measured: min(2, max(2 * 0.5, 2 * 0.5)) = 1 s -> one template + the extern
    assert Budget(2.0).allowance(5) == (1, 2 * PRIOR_S_PER_CHOICE)
    # 40 s: half of it (20 s) caps the first op: 20 // 0.5 - 1 = 39 templates
    assert Budget(40.0).allowance(100) == (39, 40 * PRIOR_S_PER_CHOICE)


def test_a_single_template_is_allowed_when_the_budget_covers_it():
    assert Budget(100.0).allowance(1) == (1, 2 * PRIOR_S_PER_CHOICE)


def test_reservations_of_ops_in_flight_add_up():
    b = Budget(100.0)
    _, r1 = b.allowance(3)
    _, r2 = b.allowance(2)
    assert b.reserved == pytest.approx(r1 + r2)
    assert b.remaining == pytest.approx(100.0 - r1 - r2)


def test_an_op_that_ran_no_choice_is_charged_but_not_measured():
    b = Budget(10.0)
    b.settle(0.0, 1.0, 0)
    assert b.spent == 1.0 and b.per_choice == PRIOR_S_PER_CHOICE
    assert b.smallest_unit == float("inf")
    b.settle(0.0, 1.0, 2)
    assert b.per_choice == 0.5 and b.smallest_unit == 1.0


def test_per_choice_is_the_mean_over_every_measured_op():
    b = Budget(10.0)
    b.settle(0.0, 0.2, 1)  # one choice, under a second
    assert b.per_choice == pytest.approx(0.2)
    b.settle(0.0, 3.0, 1)
    assert b.per_choice == pytest.approx(1.6)  # (0.2 + 3.0) / 2
    b.settle(0.0, 1.8, 3)
    assert b.per_choice == pytest.approx(1.0)  # 5.0 s / 5 choices
    assert b.smallest_unit == pytest.approx(0.2)


def test_as_dict_rounds_to_four_places_and_never_reports_negative_remaining():
    b = Budget(10.0)
    assert b.as_dict() == {"budget_s": 10.0, "spent_s": 0.0, "remaining_s": 10.0,
                           "per_choice_s": PRIOR_S_PER_CHOICE}
    b.settle(0.0, 1.23456, 3)
    assert b.as_dict() == {"budget_s": 10.0, "spent_s": 1.2346, "remaining_s": 8.7654,
                           "per_choice_s": 0.4115}
    b.settle(0.0, 20.0, 1)
    assert b.as_dict()["remaining_s"] == 0.0
