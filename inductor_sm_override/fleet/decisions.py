"""Shared autotune decisions: one rank tunes an op, the others check its pick and run it.

Under ``fleet="job"`` / ``"node"`` (with ``verify``), every verified GEMM op gets a
**decision key** (:func:`decision_key`): the op, its input and output layouts (dtype, sizes,
strides, offset), the device model (name, SM count, simulated and limited SMs; on the CPU the
processor and thread count), torch and Triton versions, Inductor's GEMM backends and search
space, and ``settings_key`` (the package version and the settings that change compiled code).
No device index: ``cuda:0`` and ``cuda:1`` of one model share a key, where Inductor's graph
key differs. A **decision** is the winning choice's identity (its name without Inductor's
counter, its description and info) and who tuned it.

Per op, before Inductor's selector runs (``get_algorithm_selector_cache`` returns a proxy whose
call does this), a rank looks the key up (this process, the group's store, the shared
directory, Redis: engines.py); a follower (group rank > 0) that finds none waits for its
leader's (bounded: engines.wait). Then, in the selector's choice filter:

- **decided**: the decided choice is kept alone (an extern: a sole choice, run as is; a
  template: the selector adds the op's reference and checks the template against it, or the
  offered externs stay where the op has no reference), and it is benchmarked now (no deferred
  multi-template), so it wins iff it passed its check here;
- **dropped**: the decision names a choice not offered here, or it failed its check: the op
  is selected again with every choice (the first pick is dead code Inductor removes), i.e.
  autotuned here; its record notes why;
- **tuned**: no decision: autotuned here as without a fleet.

Every op a rank runs is a choice it checked itself (or the extern reference). Each op that
ends with a checked winner publishes its decision (events.listeners) to the other engines,
and gives one "fleet" event (:func:`fleet_events`, the report).
"""

from __future__ import annotations

import contextvars
import dataclasses
import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
from typing import Any

import wrapt

from ..checks.references import VERIFIED_OPS, reference_for
from ..core import events, records, state
from ..core.patching import Append, Patch
from ..core.records import choice_name
from ..core.settings import Settings, settings_key
from ..torch_plan.compat import is_reference
from ..torch_plan.hardware import device_info
from . import engines
from .group import Group, group_for

log = logging.getLogger("inductor_sm_override")

LEADER, FOLLOWER, NONE = "leader", "follower", "none"
DECIDED, TUNED, DROPPED = "decided", "tuned", "dropped"
HERE = "this process"
MAX_EVENTS = 10_000
_COUNTER = re.compile(r"_\d+$")  # Inductor's per-process choice counter (triton_mm_12)


@dataclasses.dataclass(eq=False)
class _Op:
    """One op's selection under fleet settings (one selector call, tried twice at most)."""

    name: str
    key: str
    settings: Settings
    group: Group
    call: dict[str, Any]
    decision: dict[str, Any] | None = None
    source: str | None = None
    wait_end: str | None = None
    waited_s: float = 0.0
    dropped: str | None = None  # why the decision was not used here
    retry: bool = False
    identities: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def role(self) -> str:
        if not self.group.coordinated:
            return NONE
        return LEADER if self.group.leader else FOLLOWER


_CTX: contextvars.ContextVar[_Op | None] = contextvars.ContextVar("iso_fleet_op", default=None)
_known: dict[str, tuple[dict[str, Any], str]] = {}  # key -> (decision, source): this process
_pending: dict[str, _Op] = {}  # key -> the op whose autotune event will settle it
_events: list[dict[str, Any]] = []
_lock = threading.Lock()


def fleet_events() -> list[dict[str, Any]]:
    """The 'fleet' events of this process (oldest first): per op selected under fleet
    settings, whether it was decided elsewhere (by which rank, from which engine), tuned
    here, or its decision dropped here, and how long this rank waited."""
    with _lock:
        return [dict(event) for event in _events]


def clear_fleet_events() -> None:
    with _lock:
        _events.clear()


def forget() -> None:
    """Forget this process's decisions, pending ops and stall marks (tests)."""
    with _lock:
        _known.clear()
        _pending.clear()
    engines.forget()


# --- keys and identities -------------------------------------------------------------------


def _layout_of(node: Any) -> list[Any]:
    from torch._inductor.ir import Layout

    parts: list[Any] = []
    try:
        layout = node if isinstance(node, Layout) else node.get_layout()
    except Exception:
        return ["?"]
    for field in ("dtype", "size", "stride", "offset"):
        value = getattr(layout, field, "?")
        parts.append([str(v) for v in value] if isinstance(value, (list, tuple)) else str(value))
    return parts


def _processor() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        return str(__import__(module).__version__)
    except Exception:
        return None


def decision_key(name: str, input_nodes: Any, layout: Any, settings: Settings) -> str:
    """The key of one op's decision: everything that makes the same pick right, and no
    device index (see the module docstring)."""
    import torch
    import torch._inductor.config as config

    device = getattr(layout, "device", None)
    if getattr(device, "type", "cpu") == "cpu":
        where: dict[str, Any] = {"type": "cpu", "name": _processor(),
                                 "threads": torch.get_num_threads()}
    else:
        where = device_info(settings, str(device))
    parts = {"op": name, "inputs": [_layout_of(n) for n in input_nodes or ()],
             "output": _layout_of(layout), "device": where, "torch": torch.__version__,
             "triton": _version("triton"), "settings": settings_key(settings),
             "backends": str(getattr(config, "max_autotune_gemm_backends", "")),
             "space": str(getattr(config, "max_autotune_gemm_search_space", ""))}
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def identity(choice: Any) -> str:
    """A choice's name without Inductor's counter, its description and info: the same on
    every rank that offers the same choice."""
    try:
        info = sorted((str(k), str(v)) for k, v in (choice.info_dict() or {}).items())
    except Exception:
        info = []
    return json.dumps([_COUNTER.sub("", choice_name(choice)),
                       str(getattr(choice, "description", "") or ""), info])


def _me() -> dict[str, Any]:
    rank = os.environ.get("RANK", "")
    return {"rank": int(rank) if rank.isdigit() else None, "host": socket.gethostname(),
            "pid": os.getpid()}


def _who(decision: dict[str, Any]) -> str:
    by = decision.get("by") or {}
    rank = by.get("rank")
    return f"rank {rank}" if rank is not None else f"pid {by.get('pid')} on {by.get('host')}"


# --- before the selector: look up, wait --------------------------------------------------


def _open(name: str, call: dict[str, Any], settings: Settings) -> _Op | None:
    try:
        key = decision_key(name, call.get("input_nodes"), call.get("layout"), settings)
        op = _Op(name, key, settings, group_for(str(settings.fleet)), call)
    except Exception:
        log.debug("fleet: no decision key", exc_info=True)
        return None
    with _lock:
        known = _known.get(key)
    if known is not None:
        op.decision, op.source = known[0], HERE
        return op
    op.decision, op.source = engines.lookup(op.group, key)
    if op.decision is None and op.role == FOLLOWER:
        bound = engines.wait_bound(settings.fleet_timeout_s)
        op.decision, op.wait_end, op.waited_s = engines.wait(op.group, key, bound)
        op.source = engines.STORE if op.decision is not None else None
    return op


def _select(cache: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
    """One selector call under fleet settings: decided, or selected again when the
    decision is dropped here."""
    settings = state.current()
    if settings is None or settings.fleet is None or not settings.verify:
        return cache(*args, **kwargs)
    call = dict(zip(("name", "choices", "input_nodes", "layout"), args, strict=False))
    call.update(kwargs)
    op = _open(str(call.get("name")), call, settings) if call.get("name") in VERIFIED_OPS \
        else None
    if op is None:
        return cache(*args, **kwargs)
    token = _CTX.set(op)
    try:
        decided = op.decision is not None and len(args) < 7  # benchmark now, not deferred
        result = cache(*args, **({**kwargs, "return_multi_template": False} if decided
                                 else kwargs))
        if op.dropped is None or op.retry:
            return result
        op.retry = True  # the decision failed its check here: every choice, tuned here
        return cache(*args, **kwargs)
    finally:
        _CTX.reset(token)


class _Selector(wrapt.ObjectProxy):  # type: ignore[misc]
    """Inductor's selector cache; calling it selects under the fleet's decisions."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _select(self.__wrapped__, args, kwargs)


def _get_cache(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    return _Selector(wrapped(*args, **kwargs))


# --- in the selector: narrow to the decided choice ---------------------------------------


def choose(record: Any, choices: list[Any]) -> list[Any]:
    """The choice filter (core/records.choice_filters): the decided choice, or all."""
    op = _CTX.get()
    if op is None or op.name != record.name:
        return choices
    record.key = op.key
    op.identities.update({choice_name(c): identity(c) for c in choices})
    with _lock:
        _pending[op.key] = op
    if op.retry:
        record.note(f"fleet: {op.dropped}; autotuned here")
        return choices
    if op.decision is None:
        if op.wait_end in (engines.TIMEOUT, engines.STALLED, engines.STORE_ERROR):
            record.note(f"fleet: no decision from the leader ({op.wait_end} after "
                        f"{op.waited_s:.1f} s): autotuned here")
        return choices
    want = op.decision["choice"]
    chosen = next((c for c in choices if identity(c) == want), None)
    who = _who(op.decision)
    if chosen is None:
        op.dropped = f"the decision of {who} ({op.source}) names a choice not offered here"
        op.retry = True
        record.note(f"fleet: {op.dropped} ({op.decision.get('name')}): autotuned here")
        return choices
    record.origin = f"decided by {who}"
    record.note(f"fleet: {choice_name(chosen)} decided by {who} ({op.source}), checked here")
    if is_reference(chosen):
        return [chosen]  # the extern itself: a sole choice
    call = op.call
    if reference_for(record.name, call.get("input_nodes"), call.get("layout")) is not None:
        return [chosen]  # the selector adds the reference and checks the template
    return [chosen, *(c for c in choices if is_reference(c) and c is not chosen)]


# --- after the op: settle, publish, record -----------------------------------------------


def _on_event(event: dict[str, Any]) -> None:
    """An op closed (core/events.listeners): settle the fleet op it belongs to."""
    if event.get("event") != "autotune" or not event.get("key"):
        return
    with _lock:
        op = _pending.pop(str(event["key"]), None)
    if op is not None:
        _settle(op, event)


def _settle(op: _Op, event: dict[str, Any]) -> None:
    winner = event.get("winner")
    rejected = event.get("rejected") or {}
    checked = winner is not None and not event.get("winner_unchecked") and \
        winner not in rejected and winner in op.identities
    if op.decision is not None and not op.retry:
        mine = [n for n, i in op.identities.items() if i == op.decision["choice"]]
        if checked and (winner in mine or any(
                (event.get("checks") or {}).get(n, {}).get("passed") for n in mine)):
            outcome = DECIDED  # it won, or passed and an extern was faster here
        else:
            why = next((rejected[n] for n in mine if n in rejected), "not picked here")
            op.dropped = (f"the decision of {_who(op.decision)} ({op.source}) failed its "
                          f"check here: {why}")[:300]
            if _CTX.get() is op:
                return  # _select selects again with every choice
            outcome = DROPPED  # settled later (deferred): the reference stood in
    else:
        outcome = DROPPED if op.dropped else TUNED
    decision = op.decision if outcome == DECIDED else None
    if checked:
        decision = decision or {"choice": op.identities[str(winner)], "name": winner,
                                "op": op.name, "by": _me(), "at": round(time.time(), 3)}
        with _lock:
            _known[op.key] = (decision, op.source if outcome == DECIDED else HERE)
        engines.publish(op.group, op.key, decision,
                        op.source if outcome == DECIDED else None)
    _record(op, outcome, decision, winner)


def _record(op: _Op, outcome: str, decision: dict[str, Any] | None, winner: Any) -> None:
    group = op.group
    by = (decision or {}).get("by") or {}
    event = {"event": "fleet", "scope": group.scope, "group": group.name, "role": op.role,
             "rank": _me()["rank"], "group_rank": group.rank, "leader": group.leader_name,
             "store": group.store_kind or None, "op": op.name, "key": op.key,
             "outcome": outcome, "winner": winner,
             "source": op.source if outcome == DECIDED else None,
             "tuned_by": by.get("rank") if outcome == DECIDED else _me()["rank"],
             "wait_end": op.wait_end, "waited_s": round(op.waited_s, 3),
             "detail": op.dropped or (group.why_alone or ""), "at": round(time.time(), 3)}
    with _lock:
        _events.append(event)
        del _events[:-MAX_EVENTS]
    events.publish(op.settings, event)


def build_patches(plan: Any) -> list[Any]:
    """The selector proxy, the choice filter and the event listener (held with the other
    patches while settings are in force)."""
    selector = plan.selector
    getter = vars(selector).get("get_algorithm_selector_cache") if selector else None
    if getter is None:  # torch < 2.9: no decisions (every op is tuned here)
        return []
    return [Patch(selector, "get_algorithm_selector_cache",
                  wrapt.FunctionWrapper(getter, _get_cache)),
            Append(records, "choice_filters", choose),
            Append(events, "listeners", _on_event)]
