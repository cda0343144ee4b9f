"""Wall-clock autotune budget shared by every op of an active block."""

from __future__ import annotations

import math
import threading

# Before anything was measured in a block, assume a choice costs this much (precompile +
# benchmark). Measured: a forced Triton GEMM's whole autotune (all its configs) took 0.8-22 s
# on an H100 (benchmarks/results/h100-torch2.11-notes-2026-11.md); the CPU C++ template
# ~0.13 s each with MKL (benchmarks/results/compile_budget-cpu-*).
PRIOR_S_PER_CHOICE = 0.5
FIRST_OP_SHARE = 0.5  # before any measurement an op may plan at most this share (or one
# template + the extern at the prior cost, whichever is more)


class Budget:
    """Tracks spent and reserved autotune seconds; decides how many templates an op may try.

    An op's cost is modelled as ``(templates + 1) * per_choice`` (the +1 is the extern /
    fallback choice that is always benchmarked). ``per_choice`` is the mean measured cost
    per benchmarked choice of the ops that finished in this block (the prior before that).
    """

    def __init__(self, seconds: float) -> None:
        self.total = float(seconds)
        self.spent = 0.0
        self.reserved = 0.0
        self._measured_s = 0.0
        self._measured_choices = 0
        self._smallest_unit = math.inf
        self._lock = threading.Lock()

    @property
    def per_choice(self) -> float:
        if self._measured_choices == 0:
            return PRIOR_S_PER_CHOICE
        return self._measured_s / self._measured_choices

    @property
    def remaining(self) -> float:
        return self.total - self.spent - self.reserved

    @property
    def smallest_unit(self) -> float:
        """The smallest single op cost seen (the goal allows an overrun of one such unit)."""
        return self._smallest_unit

    def allowance(self, templates: int) -> tuple[int, float]:
        """How many of ``templates`` the next op may benchmark, and the seconds reserved."""
        with self._lock:
            available = self.remaining
            unit = self.per_choice
            if self._measured_choices == 0:  # nothing measured yet: a conservative share
                available = min(available, max(self.total * FIRST_OP_SHARE, 2 * unit))
            if available <= 0 or templates <= 0:
                allowed = 0
            else:
                allowed = max(0, min(templates, int(available // unit) - 1))
            reserve = (allowed + 1) * unit if allowed else 0.0
            self.reserved += reserve
            return allowed, reserve

    def settle(self, reserved: float, elapsed: float, choices_run: int) -> None:
        """An op finished: release its reservation and charge what it really took."""
        with self._lock:
            self.reserved = max(0.0, self.reserved - reserved)
            self.spent += elapsed
            if choices_run > 0 and elapsed > 0:
                self._measured_s += elapsed
                self._measured_choices += choices_run
                self._smallest_unit = min(self._smallest_unit, elapsed)

    def as_dict(self) -> dict[str, float]:
        return {
            "budget_s": self.total,
            "spent_s": round(self.spent, 4),
            "remaining_s": round(max(0.0, self.total - self.spent), 4),
            "per_choice_s": round(self.per_choice, 4),
        }
