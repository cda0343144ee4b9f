"""Shared autotune decisions: one rank tunes an op, the others check its pick and run it.

Under ``fleet`` settings (with ``verify``) each verified GEMM op has a **decision key**
(:func:`decision_key`: op, input and output layouts, device model, SM counts, torch and
Triton versions, Inductor's GEMM backends and search space, ``settings_key``; no device
index) and a **decision**: the winner's :func:`identity` and who tuned it. Before Inductor's
selector runs (``get_algorithm_selector_cache`` returns a proxy), a rank looks the key up
(this process, then engines.py); a follower that finds none waits for its leader's
(bounded). The choice filter (:func:`choose`) then keeps the decided choice alone (the
selector adds the op's reference and checks it against it; benchmarked now, not deferred),
so it wins iff it passed here; a decision that names a choice not offered here, or fails
its check, is **dropped**: the op is selected again with every choice (the first pick is
dead code Inductor removes). Every op that ends with a checked winner publishes its
decision (events.listeners) and one "fleet" event (:func:`fleet_events`, the report).
"""

from __future__ import annotations

import contextvars
import dataclasses
import hashlib
import json
import logging
import os
import platform
import re
import socket
import sys
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
        return (LEADER if self.group.leader else FOLLOWER) if self.group.coordinated else NONE


_CTX: contextvars.ContextVar[_Op | None] = contextvars.ContextVar("iso_fleet_op", default=None)
_known: dict[str, tuple[dict[str, Any], str]] = {}  # key -> (decision, source): this process
_pending: dict[str, _Op] = {}  # key -> the op whose autotune event will settle it
_events: list[dict[str, Any]] = []
_lock = threading.Lock()


def fleet_events() -> list[dict[str, Any]]:
    """The 'fleet' events of this process (oldest first): per op, decided elsewhere (by
    whom, from where), tuned here, or its decision dropped here; how long this rank waited."""
    with _lock:
        return [dict(event) for event in _events]


def clear_fleet_events() -> None:
    with _lock:
        _events.clear()


def forget() -> None:
    """Forget this process's decisions, pending ops and stall marks (tests)."""
    with _lock:
        _known.clear(), _pending.clear()
    engines.forget()


def _layout_of(node: Any) -> list[Any]:
    from torch._inductor.ir import Layout

    try:
        layout = node if isinstance(node, Layout) else node.get_layout()
    except Exception:
        return ["?"]
    values = [getattr(layout, field, "?") for field in ("dtype", "size", "stride", "offset")]
    return [[str(v) for v in x] if isinstance(x, (list, tuple)) else str(x) for x in values]


def _processor() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            return next(line.split(":", 1)[1].strip() for line in file
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def decision_key(name: str, input_nodes: Any, layout: Any, settings: Settings) -> str:
    """The key of one op's decision: everything that makes the same pick right, and no
    device index (see the module docstring)."""
    import torch
    import torch._inductor.config as config

    device = getattr(layout, "device", None)
    where = device_info(settings, str(device)) if getattr(device, "type", "cpu") != "cpu" \
        else {"type": "cpu", "name": _processor(), "threads": torch.get_num_threads()}
    parts = {"op": name, "inputs": [_layout_of(n) for n in input_nodes or ()],
             "output": _layout_of(layout), "device": where, "torch": torch.__version__,
             "triton": getattr(sys.modules.get("triton"), "__version__", None),
             "settings": settings_key(settings),
             "backends": str(getattr(config, "max_autotune_gemm_backends", "")),
             "space": str(getattr(config, "max_autotune_gemm_search_space", ""))}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:40]


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
    return f"rank {by['rank']}" if by.get("rank") is not None else \
        f"pid {by.get('pid')} on {by.get('host')}"


def _open(name: str, call: dict[str, Any], settings: Settings) -> _Op | None:
    try:
        key = decision_key(name, call.get("input_nodes"), call.get("layout"), settings)
        op = _Op(name, key, settings, group_for(str(settings.fleet)), call)
    except Exception:
        log.debug("fleet: no decision key", exc_info=True)
        return None
    with _lock:
        op.decision, op.source = _known.get(key) or (None, None)
    if op.decision is None:
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
    call = {**dict(zip(("name", "choices", "input_nodes", "layout"), args, strict=False)),
            **kwargs}
    op = _open(str(call["name"]), call, settings) if call.get("name") in VERIFIED_OPS else None
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
    if reference_for(record.name, op.call.get("input_nodes"), op.call.get("layout")):
        return [chosen]  # the selector adds the reference and checks the template
    return [chosen, *(c for c in choices if is_reference(c) and c is not chosen)]


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
    decision, source = (op.decision, op.source) if outcome == DECIDED else (None, HERE)
    if checked:
        decision = decision or {"choice": op.identities[str(winner)], "name": winner,
                                "op": op.name, "by": _me(), "at": round(time.time(), 3)}
        with _lock:
            _known[op.key] = (decision, source)
        engines.publish(op.group, op.key, decision, source)
    group, by = op.group, (decision or {}).get("by") or {}
    fleet = {"event": "fleet", "scope": group.scope, "group": group.name, "role": op.role,
             "rank": _me()["rank"], "leader": group.leader_name,
             "store": group.store_kind or None, "op": op.name, "key": op.key,
             "outcome": outcome, "winner": winner,
             "source": op.source if outcome == DECIDED else None,
             "tuned_by": by.get("rank") if outcome == DECIDED else _me()["rank"],
             "wait_end": op.wait_end, "waited_s": round(op.waited_s, 3),
             "detail": op.dropped or (group.why_alone or ""), "at": round(time.time(), 3)}
    with _lock:
        _events.append(fleet)
        del _events[:-MAX_EVENTS]
    events.publish(op.settings, fleet)


def build_patches(plan: Any) -> list[Any]:
    """The selector proxy, the choice filter and the event listener (held with the other
    patches while settings are in force)."""
    selector = plan.selector
    getter = vars(selector).get("get_algorithm_selector_cache") if selector else None
    if getter is None:  # torch < 2.9: no decisions (every op is tuned here)
        return []
    return [Patch(selector, "get_algorithm_selector_cache",
                  wrapt.FunctionWrapper(getter, lambda w, i, a, k: _Selector(w(*a, **k)))),
            Append(records, "choice_filters", choose),
            Append(events, "listeners", _on_event)]
