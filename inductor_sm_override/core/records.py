"""What happened to each autotuned op: its record while it is tuned, its event after.

Hooks fill an :class:`OpRecord` (hooks/selector.py opens it); what another hook learnt
before the op opened (choices not generated, configs torch pruned, the rank a choice came
from) waits in :func:`pend` until the op opens. :func:`close` publishes the op's
"autotune" event (core/events.py) and keeps the event (JSON-able: no IR nodes are kept)
for :func:`decisions`. :data:`choice_filters` may narrow an op's choices before it is
benchmarked (the fleet's decisions). This module imports no torch.
"""

from __future__ import annotations

import contextvars
import dataclasses
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from . import events
from .settings import Settings

TAG = "_inductor_sm_override_op"  # attribute of a ChoiceCaller: the record of its op
MAX_DECISIONS = 10_000
_done: list[dict[str, Any]] = []
_lock = threading.Lock()
# ``filter(record, choices) -> choices`` run on a verified op's kept choices (the fleet)
choice_filters: list[Callable[[OpRecord, list[Any]], list[Any]]] = []
_PENDING: contextvars.ContextVar[tuple[tuple[str, Any], ...]] = contextvars.ContextVar(
    "iso_pending_for_next_op", default=())


def choice_name(choice: Any) -> str:
    return str(getattr(choice, "name", None) or repr(choice))


def pend(kind: str, value: Any) -> None:
    """Note ``value`` for the op about to open in this context ("dropped": (label, why),
    "generate_s": seconds, "origin": text, "note": text)."""
    _PENDING.set((*_PENDING.get(), (kind, value)))


def clear_pending() -> None:
    _PENDING.set(())


@dataclasses.dataclass(eq=False)
class OpRecord:
    """What happened to one autotuned op."""

    name: str
    settings: Settings
    shapes: list[list[int | str] | None] = dataclasses.field(default_factory=list)
    dtypes: list[str] = dataclasses.field(default_factory=list)
    device: str = ""
    sms: int | None = None
    offered: list[str] = dataclasses.field(default_factory=list)
    kept: list[str] = dataclasses.field(default_factory=list)
    dropped: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> cap/budget/smem
    externs: list[Any] = dataclasses.field(default_factory=list, repr=False)
    timings: dict[str, float | None] = dataclasses.field(default_factory=dict)
    rejected: dict[str, str] = dataclasses.field(default_factory=dict)
    rejected_by: dict[str, str] = dataclasses.field(default_factory=dict)  # check/torch/crash
    checks: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    unverified: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> why
    winner: str | None = None
    gemm: bool = False  # in the GEMM family: capped, budgeted, exceptions rejected
    verified_op: bool = False  # verification applies to this op (GEMM family, verify on)
    deferred: bool = False  # a multi-template buffer: benchmarked later, in the scheduler
    started: float = dataclasses.field(default_factory=time.perf_counter)
    autotune_s: float = 0.0  # finished do_autotuning time
    generate_s: float = 0.0  # Inductor's choice generation (template rendering) for the op
    running_since: float | None = None  # do_autotuning in progress since
    seconds: float | None = None
    reserved_s: float = 0.0
    settled: bool = False
    budget: Any = dataclasses.field(default=None, repr=False)
    budget_at_benchmark: bool = False  # the budget decides in do_autotuning
    budget_decided: bool = False
    precompile_timeout: float | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    fused: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # hooks/fusion.py
    origin: str = "tuned here"  # or "received from rank k", "decided by ..." (fleet)
    reference_added: str | None = None  # an extern the toolkit added to check a template
    key: str | None = None  # the op's decision key (fleet), None where it has none
    kept_choices: list[Any] = dataclasses.field(default_factory=list, repr=False)
    references: dict[int, tuple[Any, Any]] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def closed(self) -> bool:
        return self.seconds is not None

    def take_pending(self) -> None:
        """Attach what was noted for this op before it opened (:func:`pend`)."""
        for kind, value in _PENDING.get():
            if kind == "dropped":
                self.dropped[value[0]] = value[1]
            elif kind == "generate_s":
                self.generate_s += value
            elif kind == "origin":
                self.origin = value
            else:
                self.note(str(value))
        _PENDING.set(())

    def reject(self, choice: str, reason: str, by: str = "check") -> None:
        """``by``: "check" (the toolkit's), "torch" (torch's own VERIFY), "crash"."""
        self.rejected[choice] = reason
        self.rejected_by[choice] = by
        self.timings[choice] = None

    def extern_names(self) -> set[str]:
        return {choice_name(c) for c in self.externs}

    def passed(self, choice: str) -> bool:
        return (self.checks.get(choice) or {}).get("passed") is True

    @property
    def winner_unchecked(self) -> bool:
        """A non-reference choice won a verified op without a passed check."""
        if not (self.verified_op and self.winner) or self.winner in self.extern_names():
            return False
        return not self.passed(self.winner)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def as_event(self) -> dict[str, Any]:
        """The JSON-able 'autotune' event of this op."""
        def why(kind: str) -> list[str]:
            return sorted(n for n, w in self.dropped.items() if w == kind)

        event = {
            "event": "autotune", "name": self.name, "device": self.device, "sms": self.sms,
            "shapes": self.shapes, "dtypes": self.dtypes, "offered": self.offered,
            "kept": self.kept, "capped": why("cap"), "budget_dropped": why("budget"),
            "smem_pruned": why("smem"), "externs": sorted(self.extern_names()),
            "timings": self.timings, "winner": self.winner, "rejected": self.rejected,
            "rejected_by": self.rejected_by, "checks": self.checks,
            "unverified": self.unverified,
            "seconds": None if self.seconds is None else round(self.seconds, 4),
            "generate_s": round(self.generate_s, 4), "verify": self.settings.verify,
            "verified_op": self.verified_op, "deferred": self.deferred, "notes": self.notes,
            "fused": self.fused, "origin": self.origin, "key": self.key,
            "reference_added": self.reference_added,
            "winner_unchecked": self.winner_unchecked,
        }
        if self.budget is not None:
            event["budget"] = self.budget.as_dict()
        return event


def decisions() -> list[dict[str, Any]]:
    """The 'autotune' events of the ops autotuned in this process (oldest first)."""
    with _lock:
        return [dict(event) for event in _done]


def clear_decisions() -> None:
    """Forget the recorded autotune decisions."""
    with _lock:
        _done.clear()


def settle_budget(record: OpRecord) -> None:
    """Charge the op's time to the budget and release its reservation (once)."""
    if record.budget is None or record.settled:
        return
    record.settled = True
    run = sum(1 for v in record.timings.values() if v is not None) + len(record.rejected)
    seconds = record.seconds
    if seconds is None:  # not closed (the op raised): what it took so far
        seconds = autotune_seconds(record) or (time.perf_counter() - record.started)
    record.budget.settle(record.reserved_s, seconds if run else 0.0, run)
    record.reserved_s = 0.0


def autotune_seconds(record: OpRecord) -> float:
    """Time spent in do_autotuning so far (a call in progress included)."""
    running = record.running_since
    return record.autotune_s + (time.perf_counter() - running if running is not None else 0.0)


def close(record: OpRecord, benchmarked: bool = True) -> None:
    """Finish a record (once): its time, the budget, the published event.

    The time is what precompiling and benchmarking took (the do_autotuning wrapper), or,
    on torch without that method, the time since the op was opened.
    """
    if record.closed:
        return
    spent = autotune_seconds(record)
    record.seconds = (spent or (time.perf_counter() - record.started)) if benchmarked else spent
    settle_budget(record)
    record.references.clear()
    record.kept_choices = []
    event = record.as_event()
    with _lock:
        _done.append(event)
        del _done[:-MAX_DECISIONS]
    events.publish(record.settings, event)


def finite_or_none(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
