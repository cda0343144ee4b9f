"""What happened to each autotuned op: the op records, their events and the decision log.

The hooks that fill the records live in autotune.py; this module only keeps them.
``autotune.decisions``/``records``/``clear_decisions`` stay importable from there.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from .settings import Settings

log = logging.getLogger("inductor_sm_override")

_records: list[OpRecord] = []
_records_lock = threading.Lock()
MAX_RECORDS = 10_000
listeners: list[Callable[[OpRecord], None]] = []  # told of every finished op


def choice_name(choice: Any) -> str:
    return str(getattr(choice, "name", None) or repr(choice))


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
    # name -> why it was not benchmarked: "cap", "budget", "smem"
    dropped: dict[str, str] = dataclasses.field(default_factory=dict)
    externs: list[Any] = dataclasses.field(default_factory=list, repr=False)
    timings: dict[str, float | None] = dataclasses.field(default_factory=dict)
    rejected: dict[str, str] = dataclasses.field(default_factory=dict)
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
    budget_at_benchmark: bool = False  # the budget decides in do_autotuning, not preprocessing
    budget_decided: bool = False
    precompile_timeout: float | None = None  # what the caller asked for (seconds)
    notes: list[str] = dataclasses.field(default_factory=list)
    # checks of fused template kernels made from this op's choices (fusion.py)
    fused: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    origin: str = "tuned here"  # or "received from rank k" (distributed autotuning)
    # a reference the toolkit added so that a sole template is checked; it wins only if
    # the template fails its check
    reference_added: str | None = None
    kept_choices: list[Any] = dataclasses.field(default_factory=list, repr=False)
    _references: dict[int, tuple[Any, Any]] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def closed(self) -> bool:
        return self.seconds is not None

    def reference(self, autotune_args: Any,
                  compute: Callable[[OpRecord, Any], tuple[Any, str] | None]
                  ) -> tuple[Any, str] | None:
        """The reference output for these benchmark inputs (computed once), and its source."""
        key = id(autotune_args)
        if key in self._references:
            return self._references[key][1]
        found = compute(self, autotune_args)
        self._references[key] = (autotune_args, found)  # keep args alive: ids stay unique
        return found

    def set_reference(self, autotune_args: Any, tensor: Any, source: str) -> None:
        if id(autotune_args) not in self._references:
            self._references[id(autotune_args)] = (autotune_args, (tensor, source))

    def reject(self, choice_name: str, reason: str) -> None:
        self.rejected[choice_name] = reason
        self.timings[choice_name] = None

    @property
    def winner_unchecked(self) -> bool:
        """A non-reference choice won a verified op without a passed check."""
        if not (self.verified_op and self.winner):
            return False
        if self.winner in {choice_name(c) for c in self.externs}:
            return False
        check = self.checks.get(self.winner)
        return not (check is not None and check.get("passed") is True)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def as_event(self) -> dict[str, Any]:
        """The JSON-able 'autotune' event of this op."""
        event = {
            "event": "autotune",
            "name": self.name,
            "device": self.device,
            "sms": self.sms,
            "shapes": self.shapes,
            "dtypes": self.dtypes,
            "offered": self.offered,
            "kept": self.kept,
            "capped": sorted(n for n, why in self.dropped.items() if why == "cap"),
            "budget_dropped": sorted(n for n, why in self.dropped.items() if why == "budget"),
            "smem_pruned": sorted(n for n, why in self.dropped.items() if why == "smem"),
            "externs": [choice_name(c) for c in self.externs],
            "timings": self.timings,
            "winner": self.winner,
            "rejected": self.rejected,
            "checks": self.checks,
            "unverified": self.unverified,
            "seconds": None if self.seconds is None else round(self.seconds, 4),
            "generate_s": round(self.generate_s, 4),
            "verify": self.settings.verify,
            "verified_op": self.verified_op,
            "deferred": self.deferred,
            "notes": self.notes,
            "fused": self.fused,
            "origin": self.origin,
            "reference_added": self.reference_added,
            "winner_unchecked": self.winner_unchecked,
        }
        if self.budget is not None:
            event["budget"] = self.budget.as_dict()
        return event


def decisions() -> list[dict[str, Any]]:
    """The 'autotune' events of the ops autotuned in this process (oldest first)."""
    return [record.as_event() for record in records()]


def clear_decisions() -> None:
    """Forget the recorded autotune decisions."""
    clear_records()


def records() -> list[OpRecord]:
    """Records of the autotuned ops finished in this process (oldest first)."""
    with _records_lock:
        return list(_records)


def clear_records() -> None:
    with _records_lock:
        _records.clear()


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
    """Finish a record: its time, the budget settlement, the report, the listeners.

    The time is what precompiling and benchmarking took (the do_autotuning wrapper), or,
    on torch without that method, the time since the op was opened. Closing twice is a
    no-op.
    """
    if record.closed:
        return
    spent = autotune_seconds(record)
    if benchmarked:
        record.seconds = spent or (time.perf_counter() - record.started)
    else:
        record.seconds = spent
    settle_budget(record)
    record._references.clear()
    record.kept_choices = []
    from .report import on_autotune

    on_autotune(record.as_event(), record.settings)
    with _records_lock:
        _records.append(record)
        del _records[:-MAX_RECORDS]
    for listener in list(listeners):
        try:
            listener(record)
        except Exception:
            log.debug("autotune listener failed", exc_info=True)


def finite_or_none(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
