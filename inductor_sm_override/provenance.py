"""Provenance of cached graphs: every graph written under override settings carries its
manifest, and every graph served from Inductor's FX graph cache is judged by it.

Hooks (installed with the other patches; read in torch 2.11, 2.13 and 2.15, where these
methods are the same):

- ``FxGraphCache._save_graph(key, compiled_graph, example_inputs, local, remote_cache)``:
  the graph's manifest (manifest.py: settings, producer, the ops of this graph) is sealed
  and set on the graph object before torch pickles it, so the graph entry carries it
  wherever torch stores the entry: the local cache, the remote (Redis) cache, a portable
  bundle (``torch.compiler.save_cache_artifacts``, which records the pickled entry). After
  torch wrote the graph, a copy goes next to it in the same backends (manifest_store.py).
- ``FxGraphCache.iterate_over_candidates(local, remote_cache, key)`` (inherited from
  ``GuardedCache``; Inductor's one way to read entries, local first, then remote): each
  candidate is judged (:func:`judge`) and, with ``require_manifest``, a candidate whose
  manifest does not vouch for it is skipped, so torch sees a miss (or the next entry).
- ``compile_scope.GRAPH_HOOKS`` gets :func:`manifest.graph_scope`: the ops autotuned while
  one graph compiles (under the settings of its compile) are collected for its manifest.

A hit is "unverified" when its entry carries no manifest, a corrupted one, or one that
does not match the copy next to it, or when the manifest is of another graph, settings,
device or SM count, or records ops its producer took unchecked.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import inspect
import logging
from collections.abc import Iterator
from typing import Any

import wrapt

from . import manifest, state
from .manifest_store import LOCAL, REMOTE, STORE
from .patching import Append, Patch
from .settings import Settings

log = logging.getLogger("inductor_sm_override")

CARRIED = "_inductor_sm_override_manifest"  # attribute of a CompiledFxGraph


@dataclasses.dataclass
class Verdict:
    """What the manifest of one cache entry says about serving it here."""

    source: str  # "local" or "remote"
    manifest: dict[str, Any] | None
    sha256: str | None
    reasons: list[str]  # why the entry is unverified (empty: verified)
    notes: list[str]

    @property
    def unverified(self) -> bool:
        return bool(self.reasons)


def judge(graph: Any, key: str, in_local: bool, remote_cache: Any,
          settings: Settings) -> Verdict:
    """Judge one cache entry of graph ``key`` by the manifest it carries and the copy next
    to it in the backend it came from."""
    source = LOCAL if in_local else REMOTE
    reasons: list[str] = []
    notes: list[str] = []
    carried = getattr(graph, CARRIED, None)
    body = sha = None
    if carried is None:
        reasons.append("no manifest: the graph entry carries none")
    else:
        try:
            body = manifest.unseal(carried)
            sha = carried.get("sha256")
        except manifest.CorruptedManifestError as exc:
            reasons.append(f"corrupted manifest in the graph entry: {exc}")
    if body is not None and sha is not None:
        stored = (STORE.read_remote(key, remote_cache) if source == REMOTE
                  else STORE.read_local(key, sha))
        if stored.status == "missing":
            notes.append(f"no manifest copy in the {source} cache (portable bundle, evicted "
                         "or removed): the one the graph entry carries is used")
        elif not stored.ok:
            reasons.append(f"corrupted manifest in the {source} cache: {stored.status}"
                           + (f" ({stored.reason})" if stored.reason else ""))
        elif (stored.envelope or {}).get("sha256") != sha:
            reasons.append(f"the manifest in the {source} cache is not the one the graph "
                           "entry carries")
        reasons += manifest.assess(body, key, settings)
    return Verdict(source, body, sha, reasons, notes)


# --- judging during one load ---------------------------------------------------------------


@dataclasses.dataclass
class _Load:
    settings: Settings
    verdicts: dict[int, tuple[Any, Verdict]] = dataclasses.field(default_factory=dict)
    refused: list[Verdict] = dataclasses.field(default_factory=list)


_LOAD: contextvars.ContextVar[_Load | None] = contextvars.ContextVar(
    "inductor_sm_override_cache_load", default=None)


@contextlib.contextmanager
def judging(settings: Settings) -> Iterator[_Load]:
    """Around one ``FxGraphCache.load_with_key``: collect the verdicts of its candidates."""
    load = _Load(settings)
    token = _LOAD.set(load)
    try:
        yield load
    finally:
        _LOAD.reset(token)


def verdict_of(load: _Load, graph: Any) -> Verdict | None:
    found = load.verdicts.get(id(graph))
    return found[1] if found is not None and found[0] is graph else None


_original_iterate: Any = None


def _candidates(cls: Any, local: bool, remote_cache: Any, key: str) -> Iterator[Any]:
    """``FxGraphCache.iterate_over_candidates`` judging each entry (see module doc)."""
    load = _LOAD.get()
    for item in _original_iterate(cls, local, remote_cache, key):
        if load is None:
            yield item
            continue
        graph, _content, in_local = item
        try:
            verdict = judge(graph, key, in_local, remote_cache, load.settings)
        except Exception as exc:  # judging must never break a load: unverified
            verdict = Verdict(LOCAL if in_local else REMOTE, None, None,
                              [f"manifest not checked: {type(exc).__name__}: {exc}"[:200]], [])
        if verdict.unverified and load.settings.require_manifest:
            load.refused.append(verdict)
            continue  # torch goes on to the next entry, else compiles: a miss
        load.verdicts[id(graph)] = (graph, verdict)
        yield item


# --- writing -------------------------------------------------------------------------------

_SAVE_PARAMS = ("key", "compiled_graph", "example_inputs", "local", "remote_cache")


def _on_save(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """Around ``FxGraphCache._save_graph``: the entry carries its manifest; a copy goes next
    to it once torch wrote it."""
    graph_ops = manifest.current_graph()
    settings = graph_ops.settings if graph_ops is not None else state.current()
    if settings is None:
        return wrapped(*args, **kwargs)
    bound = dict(zip(_SAVE_PARAMS, args, strict=False))
    bound.update(kwargs)
    envelope = None
    try:
        key = str(bound["key"])
        ops = graph_ops.ops if graph_ops is not None else None
        envelope = manifest.seal(manifest.build(key, settings, ops))
        setattr(bound["compiled_graph"], CARRIED, envelope)
    except Exception:
        log.debug("manifest not built", exc_info=True)
    errors_before = _write_errors()
    result = wrapped(*args, **kwargs)
    if envelope is not None and _write_errors() == errors_before:
        STORE.write(key, envelope, local=bool(bound.get("local")),
                    remote_cache=bound.get("remote_cache"))
    return result


def _write_errors() -> int:
    from torch._dynamo.utils import counters

    return (counters["inductor"]["fxgraph_cache_pickle_error"]
            + counters["inductor"]["fxgraph_cache_write_error"])


# --- installation --------------------------------------------------------------------------


def build_patches() -> list[Patch]:
    """The save / lookup hooks on ``FxGraphCache`` (where its methods are as read)."""
    global _original_iterate
    try:
        from torch._inductor.codecache import FxGraphCache
    except Exception:
        return []
    patches: list[Patch] = []
    save = vars(FxGraphCache).get("_save_graph")
    if isinstance(save, staticmethod):
        patches.append(Patch(FxGraphCache, "_save_graph",
                             staticmethod(wrapt.FunctionWrapper(save.__func__, _on_save))))
    iterate = inspect.getattr_static(FxGraphCache, "iterate_over_candidates", None)
    if isinstance(iterate, classmethod):
        _original_iterate = iterate.__func__
        patches.append(Patch(FxGraphCache, "iterate_over_candidates", classmethod(_candidates)))
    from . import compile_scope

    # the ops autotuned while one graph compiles, collected for its manifest
    patches.append(Append(compile_scope, "GRAPH_HOOKS", manifest.graph_scope))
    return patches
