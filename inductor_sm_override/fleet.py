"""Compile once per fleet: one rank compiles and writes each graph, the others load it.

With ``fleet="job"`` (one leader, global rank 0) or ``fleet="node"`` (local rank 0 of each
node), set on a block, ``iso.compile``, ``iso.backend`` or ``INDUCTOR_SM_OVERRIDE_FLEET``,
every graph compiled under the settings goes through :func:`graph_scope` (a
``compile_scope.GRAPH_HOOKS`` hook) and, where Inductor looks it up in its FX graph cache
(``FxGraphCache.load_with_key``, cache.py), through :func:`before_lookup` /
:func:`after_lookup`. The ranks talk through torch's store (fleet_group.py). Per graph,
counted in the order each rank compiles them (index ``i``):

- the **leader** looks up, compiles and writes as usual. When it knows the graph's key K
  it sets ``claimed/K`` and ``slot/<i>`` = K; when the graph is done, ``done/K`` = its
  outcome ("written": graph and manifest stored, "hit", "not written", "failed": the
  compile raised). A graph with no key (not cacheable) still fills ``slot/<i>``;
- a **follower** waits before its lookup of K, polling every ``POLL_S``, until the first
  of: ``done/K`` (the leader finished K: written, hit or failed), K's manifest in the
  cache it will read (someone wrote the graph), ``slot/<i>`` set to another key while K
  is not claimed (the leader's corresponding graph is another one: a rank-dependent shape,
  a graph only some ranks compile), or ``fleet_timeout_s``. Then it looks up: a hit is
  loaded and judged like any hit (its manifest, ``require_manifest``); a miss is compiled
  here. After a timeout the follower waits again only once the leader has filled another
  slot (a leader that stalled or compiles nothing costs one timeout, not one per graph).

No rank ever waits for another without a bound, and nothing here raises into a compile:
a store error ends the wait and the rank compiles by itself. Each graph gives one ``fleet``
event (:func:`fleet_events`, the report): role, graph index and key, outcome, why the wait
ended and how long it took.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from .fleet_group import Group, group_for
from .settings import Settings

log = logging.getLogger("inductor_sm_override")

POLL_S = 0.25
LEADER, FOLLOWER, NONE = "leader", "follower", "none"
# why a follower's wait ended
MANIFEST, LEADER_DONE, LEADER_FAILED = "manifest", "leader_done", "leader_failed"
OTHER_GRAPH, TIMEOUT, STALLED = "leader_other_graph", "timeout", "leader_stalled"
STORE_ERROR, NO_KEY = "store_error", "not_cacheable"
MAX_EVENTS = 10_000


@dataclasses.dataclass
class _Graph:
    """One graph compiled (or loaded) under fleet settings, in its compiling thread."""

    settings: Settings
    group: Group
    index: int
    key: str | None = None
    local: bool = False
    remote_cache: Any = None
    hit: bool | None = None
    written: dict[str, str] | None = None
    waited_s: float = 0.0
    wait_end: str | None = None
    detail: str = ""
    claimed: bool = False
    slot_filled: bool = False


@dataclasses.dataclass
class _Follower:
    stalled_at: int | None = None  # leader's filled slots when a wait last timed out


_GRAPH: contextvars.ContextVar[_Graph | None] = contextvars.ContextVar(
    "inductor_sm_override_fleet_graph", default=None)
_counters: dict[tuple[int, str], Iterator[int]] = {}
_followers: dict[str, _Follower] = {}
_events: list[dict[str, Any]] = []
_lock = threading.Lock()


def fleet_events() -> list[dict[str, Any]]:
    """The 'fleet' events of this process (oldest first): per graph compiled under fleet
    settings, what this rank did (led, waited N s and hit, compiled here and why)."""
    with _lock:
        return [dict(event) for event in _events]


def clear_fleet_events() -> None:
    with _lock:
        _events.clear()


def _next_index(group: Group) -> int:
    with _lock:
        counter = _counters.setdefault((os.getpid(), group.name), itertools.count())
        return next(counter)


# --- the graph hook ----------------------------------------------------------------------


@contextlib.contextmanager
def graph_scope(settings: Settings) -> Iterator[None]:
    """Around one graph compiled or loaded under ``settings`` (a GRAPH_HOOKS factory)."""
    if settings.fleet is None:
        yield
        return
    graph = _open(settings)
    if graph is None:
        yield
        return
    token = _GRAPH.set(graph)
    failed: BaseException | None = None
    try:
        yield
    except BaseException as exc:
        failed = exc
        raise
    finally:
        _GRAPH.reset(token)
        _close(graph, failed)


def _open(settings: Settings) -> _Graph | None:
    try:
        group = group_for(str(settings.fleet))
        if group.why_alone is not None and group.size is not None and group.size <= 1:
            return None  # nothing to share: no event either
        return _Graph(settings, group, _next_index(group))
    except Exception:
        log.debug("fleet: no group", exc_info=True)
        return None


def _role(group: Group) -> str:
    if not group.coordinated:
        return NONE
    return LEADER if group.leader else FOLLOWER


# --- around the FX-graph-cache lookup ------------------------------------------------------


def before_lookup(key: str, local: bool, remote_cache: Any) -> None:
    """The graph being compiled has key ``key``: the leader claims it, a follower waits
    until it can load it (or should compile it). Never raises."""
    graph = _GRAPH.get()
    if graph is None or graph.key is not None:
        return
    graph.key, graph.local, graph.remote_cache = key, bool(local), remote_cache
    role = _role(graph.group)
    try:
        if role == LEADER:
            _claim(graph)
        elif role == FOLLOWER:
            _wait(graph)
    except Exception as exc:
        graph.wait_end = STORE_ERROR if role == FOLLOWER else graph.wait_end
        graph.detail = f"store error: {type(exc).__name__}: {exc}"[:300]
        log.debug("fleet: store error", exc_info=True)


def after_lookup(hit: bool) -> None:
    """Whether the lookup (judged, ``require_manifest`` applied) served the graph."""
    graph = _GRAPH.get()
    if graph is not None:
        graph.hit = bool(hit)


def on_written(key: str, envelope: dict[str, Any], done: dict[str, str]) -> None:
    """A manifest was written (manifest_store.written_listeners): the graph and its
    manifest are in the cache."""
    graph = _GRAPH.get()
    if graph is not None and graph.key == key:
        graph.written = dict(done)


# --- the leader ----------------------------------------------------------------------------


def _claim(graph: _Graph) -> None:
    store = graph.group.store
    store.set(f"claimed/{graph.key}", str(graph.index))  # before the slot: see _wait
    _fill_slot(graph, graph.key or "")


def _fill_slot(graph: _Graph, key: str) -> None:
    if graph.slot_filled:
        return
    graph.slot_filled = True
    store = graph.group.store
    store.set(f"slot/{graph.index}", key)
    store.add("slots", 1)


def _leader_outcome(graph: _Graph, failed: BaseException | None) -> str:
    if failed is not None:
        return "failed"
    if graph.hit:
        return "hit"
    if graph.written and any(v == "written" for v in graph.written.values()):
        return "written"
    return "not written"


def _publish(graph: _Graph, outcome: str) -> None:
    store = graph.group.store
    if graph.key is None:
        _fill_slot(graph, "")  # no key (not cacheable, or failed before the lookup)
        return
    store.set(f"done/{graph.key}", json.dumps({"outcome": outcome, "index": graph.index,
                                               "written": graph.written}))


# --- a follower ----------------------------------------------------------------------------


def _manifest_present(graph: _Graph) -> bool:
    from .manifest_store import STORE

    if graph.remote_cache is not None and \
            STORE.read_remote(graph.key, graph.remote_cache).status != "missing":
        return True
    return graph.local and bool(STORE.local_manifests(str(graph.key)))


def _slots(store: Any) -> int:
    return int(store.add("slots", 0))


def _wait(graph: _Graph) -> None:
    store, key, index = graph.group.store, str(graph.key), graph.index
    with _lock:
        follower = _followers.setdefault(graph.group.name, _Follower())
    started = time.monotonic()
    deadline = started + graph.settings.fleet_timeout_s
    try:
        if follower.stalled_at is not None:
            if _slots(store) == follower.stalled_at and not store.check([f"claimed/{key}"]) \
                    and not store.check([f"done/{key}"]):
                graph.wait_end = STALLED
                graph.detail = ("the leader has finished no graph since a wait timed out: "
                                "compiled here without waiting")
                return
            follower.stalled_at = None
        while True:
            if store.check([f"done/{key}"]):
                done = json.loads(store.get(f"done/{key}"))
                failed = done.get("outcome") == "failed"
                graph.wait_end = LEADER_FAILED if failed else LEADER_DONE
                graph.detail = f"the leader's compile of this graph: {done.get('outcome')}"
                return
            if _manifest_present(graph):
                graph.wait_end = MANIFEST
                graph.detail = "the graph's manifest is in the cache"
                return
            if not store.check([f"claimed/{key}"]) and store.check([f"slot/{index}"]):
                other = store.get(f"slot/{index}").decode()
                what = f"key {other[:16]}" if other else "a graph with no cache key"
                graph.wait_end = OTHER_GRAPH
                graph.detail = f"the leader's graph {index} is another one ({what}): compiled here"
                return
            now = time.monotonic()
            if now >= deadline:
                graph.wait_end = TIMEOUT
                graph.detail = (f"timed out after {graph.settings.fleet_timeout_s:g} s "
                                "(fleet_timeout_s): compiled here")
                follower.stalled_at = _slots(store)
                return
            time.sleep(min(POLL_S, max(0.0, deadline - now)))
    finally:
        graph.waited_s = time.monotonic() - started


# --- the event -----------------------------------------------------------------------------


def _close(graph: _Graph, failed: BaseException | None) -> None:
    """The graph is done (or its compile raised): the leader publishes, every rank records
    what it did. Never raises."""
    role = _role(graph.group)
    outcome = _leader_outcome(graph, failed) if role == LEADER else \
        ("failed" if failed is not None else "hit" if graph.hit else "compiled")
    if role == LEADER:
        try:
            _publish(graph, outcome)
        except Exception as exc:
            graph.detail = f"store error: {type(exc).__name__}: {exc}"[:300]
            log.debug("fleet: publishing failed", exc_info=True)
    if role == FOLLOWER and graph.key is None and graph.wait_end is None:
        graph.wait_end, graph.detail = NO_KEY, "no FX-graph-cache key: compiled here"
    if role == NONE and not graph.detail:
        graph.detail = str(graph.group.why_alone or "")
    if failed is not None:
        graph.detail = (graph.detail + "; " if graph.detail else "") + \
            f"the compile raised {type(failed).__name__}"
    _record(graph, role, outcome)


def _record(graph: _Graph, role: str, outcome: str) -> None:
    group = graph.group
    event = {
        "event": "fleet",
        "scope": group.scope,
        "group": group.name,
        "role": role,
        "rank": _global_rank(),
        "group_rank": group.rank,
        "leader": group.leader_name,
        "store": group.store_kind or None,
        "graph": graph.index,
        "key": graph.key,
        "outcome": outcome,
        "wait_end": graph.wait_end,
        "waited_s": round(graph.waited_s, 3),
        "detail": graph.detail,
        "at": round(time.time(), 3),
    }
    with _lock:
        _events.append(event)
        del _events[:-MAX_EVENTS]
    try:
        from .report import emit

        emit(graph.settings, event)
    except Exception:
        log.debug("fleet: event not written", exc_info=True)


def _global_rank() -> int | None:
    raw = os.environ.get("RANK", "")
    return int(raw) if raw.isdigit() else None


def build_patches() -> list[Any]:
    """The graph hook and the manifest listener (installed with the other patches)."""
    from . import compile_scope, manifest_store
    from .patching import Append

    return [Append(compile_scope, "GRAPH_HOOKS", graph_scope),
            Append(manifest_store, "written_listeners", on_written)]
