"""Inductor's graph caches under settings: the salt's pass, manifests, hits, the trap.

- **Salt**: :func:`salted_post_pass` is the value compile_scope.py puts (last) in
  ``config.post_grad_custom_post_pass`` for a compile under settings: a pass that runs the
  user's own passes and whose ``uuid()`` adds ``settings_key(settings)``, so the FX graph
  cache key (and AOT autograd's, built on it) covers the settings.
- **Manifests** (checks/manifest.py), read in torch 2.11, 2.13 and 2.15, where these are
  the same: ``FxGraphCache._save_graph`` seals the graph's manifest onto the graph object
  before torch pickles it (one write: the entry carries it); ``iterate_over_candidates``
  (the one way Inductor reads entries, local first, then remote) judges each candidate and,
  with ``require_manifest``, skips one whose manifest does not vouch for it (torch sees a
  miss or the next entry).
- **Hits**: ``FxGraphCache.load_with_key`` inside a compile under settings, with a key
  salted by them, gives a ``cache_hit`` event (source, producer, ops, or why unverified),
  kept in :func:`cache_hits`; a refused entry gives ``cache_refused``.
- **The lazy-compile trap**: graphs are tagged with the settings they were made under;
  one called inside a block with other settings warns once (not for ``iso.backend``'s).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import inspect
import logging
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import wrapt

from ..checks import manifest
from ..core import events, state
from ..core.patching import Patch
from ..core.settings import UNTAGGED, Settings, settings_key

log = logging.getLogger("inductor_sm_override")

CARRIED = "_inductor_sm_override_manifest"  # attribute of a CompiledFxGraph
LOCAL, REMOTE = "local", "remote"
MAX_HITS = 10_000
_hits: list[dict[str, Any]] = []
_hits_lock = threading.Lock()


# --- the salt ------------------------------------------------------------------------------

_salted_class: type | None = None


def _salted_pass_class() -> type:
    global _salted_class
    if _salted_class is not None:
        return _salted_class
    from torch._inductor import custom_graph_pass as cgp

    base = getattr(cgp, "CustomInferenceAwareGraphPass", None) or cgp.CustomGraphPass
    aware = base.__name__ == "CustomInferenceAwareGraphPass"

    class SaltedPass(base):  # type: ignore[misc, valid-type]
        """Runs the user's post-grad passes unchanged; its uuid adds the settings."""

        def __init__(self, inner: tuple[Any, ...], salt: str) -> None:
            self.inner, self.salt = inner, salt

        def __call__(self, graph: Any, is_inference: bool | None = None) -> None:
            for item in self.inner:
                if aware and isinstance(item, base) and is_inference is not None:
                    item(graph, is_inference=is_inference)
                else:
                    item(graph)

        def uuid(self) -> Any:
            digest = hashlib.sha256(self.salt.encode()).hexdigest()
            return (tuple(item.uuid() for item in self.inner), f"inductor_sm_override:{digest}")

    _salted_class = SaltedPass
    return SaltedPass


def salted_post_pass(current: Any, settings: Settings) -> Any | None:
    """``config.post_grad_custom_post_pass`` for a compile under ``settings`` (None: leave
    it). The user's passes run first; a plain callable among them (no uuid) already makes
    torch bypass the FX graph cache, so nothing needs salting."""
    from torch._inductor.custom_graph_pass import CustomGraphPass

    if _salted_class is not None and isinstance(current, _salted_class):
        inner: tuple[Any, ...] = current.inner  # salt the user's passes once
    elif current is None:
        inner = ()
    else:
        inner = tuple(current) if isinstance(current, (list, tuple)) else (current,)
    if not all(isinstance(item, CustomGraphPass) for item in inner):
        return None
    return _salted_pass_class()(inner, settings_key(settings))


def salted_for(settings: Settings) -> bool:
    """Whether this thread's FX-graph-cache key is salted with ``settings`` now."""
    import torch._inductor.config as config

    current = getattr(config, "post_grad_custom_post_pass", None)
    return _salted_class is not None and isinstance(current, _salted_class) and \
        current.salt == settings_key(settings)


# --- judging entries by their manifest -------------------------------------------------------


@dataclasses.dataclass
class Verdict:
    """What the manifest an entry carries says about serving it here."""

    source: str  # "local" or "remote"
    manifest: dict[str, Any] | None
    sha256: str | None
    reasons: list[str]  # why the entry is unverified (empty: verified)

    @property
    def unverified(self) -> bool:
        return bool(self.reasons)


def judge(graph: Any, key: str, in_local: bool, settings: Settings) -> Verdict:
    """Judge one cache entry of graph ``key`` by the manifest it carries."""
    source = LOCAL if in_local else REMOTE
    carried = getattr(graph, CARRIED, None)
    if carried is None:
        return Verdict(source, None, None, ["no manifest: the graph entry carries none"])
    try:
        body = manifest.unseal(carried)
    except manifest.CorruptedManifestError as exc:
        return Verdict(source, None, None, [f"corrupted manifest in the graph entry: {exc}"])
    return Verdict(source, body, carried.get("sha256"), manifest.assess(body, key, settings))


@dataclasses.dataclass
class _Load:
    settings: Settings
    verdicts: dict[int, tuple[Any, Verdict]] = dataclasses.field(default_factory=dict)
    refused: list[Verdict] = dataclasses.field(default_factory=list)


_LOAD: contextvars.ContextVar[_Load | None] = contextvars.ContextVar("iso_load", default=None)
_original_iterate: Any = None


def _candidates(cls: Any, local: bool, remote_cache: Any, key: str) -> Iterator[Any]:
    """``FxGraphCache.iterate_over_candidates`` judging each entry."""
    load = _LOAD.get()
    for item in _original_iterate(cls, local, remote_cache, key):
        if load is None:
            yield item
            continue
        graph, _content, in_local = item
        try:
            verdict = judge(graph, key, in_local, load.settings)
        except Exception as exc:  # judging never breaks a load: unverified
            verdict = Verdict(LOCAL if in_local else REMOTE, None, None,
                              [f"manifest not checked: {type(exc).__name__}: {exc}"[:200]])
        if verdict.unverified and load.settings.require_manifest:
            load.refused.append(verdict)
            continue  # torch goes on to the next entry, else compiles: a miss
        load.verdicts[id(graph)] = (graph, verdict)
        yield item


_SAVE_PARAMS = ("key", "compiled_graph", "example_inputs", "local", "remote_cache")
_LOAD_PARAMS = ("key", "debug_lines", "example_inputs", "local", "remote_cache", "is_backward")


def _bound(names: tuple[str, ...], args: tuple, kwargs: dict) -> dict[str, Any]:
    bound = dict(zip(names, args, strict=False))
    bound.update(kwargs)
    return bound


def _on_save(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """Around ``FxGraphCache._save_graph``: the entry carries its sealed manifest."""
    graph_ops = manifest.current_graph()
    settings = graph_ops.settings if graph_ops is not None else state.current()
    if settings is not None:
        bound = _bound(_SAVE_PARAMS, args, kwargs)
        try:
            ops = graph_ops.ops if graph_ops is not None else None
            envelope = manifest.seal(manifest.build(str(bound["key"]), settings, ops))
            setattr(bound["compiled_graph"], CARRIED, envelope)
        except Exception:
            log.debug("manifest not built", exc_info=True)
    return wrapped(*args, **kwargs)


def _on_load(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """Around ``FxGraphCache.load_with_key``: one graph (AOT autograd's cache bypasses the
    inner compile); a hit under settings becomes a cache_hit event, or a miss where
    ``require_manifest`` refuses it."""
    settings = state.current()
    if settings is None:
        return wrapped(*args, **kwargs)
    bound = _bound(_LOAD_PARAMS, args, kwargs)
    key = str(bound.get("key"))
    load = _Load(settings)
    with events.graph_scope(settings):
        token = _LOAD.set(load)
        try:
            result = wrapped(*args, **kwargs)
        finally:
            _LOAD.reset(token)
        if salted_for(settings):
            result = _judged(load, key, bool(bound.get("is_backward")), result)
    return result


def _judged(load: _Load, key: str, backward: bool, result: Any) -> Any:
    settings = load.settings
    try:
        for refused in load.refused:
            _record(settings, "cache_refused", key, refused, {})
        graph, info = result
        if graph is None:
            return result
        found = load.verdicts.get(id(graph))
        verdict = found[1] if found is not None and found[0] is graph else None
        if verdict is None:  # served without passing the judging lookup
            verdict = judge(graph, key, True, settings)
            verdict.reasons.insert(0, "source unknown (not seen by the lookup hook)")
        info = info if isinstance(info, dict) else {}
        if verdict.unverified and settings.require_manifest:
            from torch._dynamo.utils import counters

            counters["inductor"]["fxgraph_cache_hit"] -= 1
            counters["inductor"]["fxgraph_cache_miss"] += 1
            _record(settings, "cache_refused", key, verdict, {})
            return None, {**{k: v for k, v in info.items() if k != "time_saved_ns"},
                          "cache_state": "miss"}
        saved = info.get("time_saved_ns")
        _record(settings, "cache_hit", key, verdict, {
            "backward": backward,
            "time_saved_s": round(saved / 1e9, 4) if isinstance(saved, (int, float)) else None})
    except Exception:  # visibility never breaks a compile
        log.debug("cache_hit event failed", exc_info=True)
    return result


def _record(settings: Settings, kind: str, key: str, verdict: Verdict,
            extra: dict[str, Any]) -> None:
    body = verdict.manifest or {}
    event = {"event": kind, "key": key, "source": verdict.source,
             "producer": body.get("producer"), "ops": body.get("ops"),
             "manifest_sha256": verdict.sha256, "unverified": verdict.unverified,
             "reasons": list(verdict.reasons), **extra, "settings": settings.compiled(),
             "settings_key": settings_key(settings), "at": round(time.time(), 3)}
    with _hits_lock:
        _hits.append(event)
        del _hits[:-MAX_HITS]
    events.publish(settings, event)


def cache_hits() -> list[dict[str, Any]]:
    """The 'cache_hit' events of this process (oldest first): graphs served from Inductor's
    FX graph cache inside a compile under settings, i.e. autotuned earlier under them."""
    with _hits_lock:
        return [dict(e) for e in _hits if e["event"] == "cache_hit"]


def cache_refusals() -> list[dict[str, Any]]:
    """The 'cache_refused' events: entries ``require_manifest`` refused."""
    with _hits_lock:
        return [dict(e) for e in _hits if e["event"] == "cache_refused"]


def clear_cache_hits() -> None:
    with _hits_lock:
        _hits.clear()


# --- the lazy-compile trap -----------------------------------------------------------------

_TAG = "_inductor_sm_override_compiled_under"
_WARNED = "_inductor_sm_override_trap_warned"
_BOUND = "<bound to its compiled function by iso.backend>"


def _tag_compiled(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """Around CompiledFxGraph.post_compile (compiles and cache loads): remember the
    settings the graph was made (or loaded) under."""
    binding = state.current_compile()
    tag = _BOUND if binding is not None and binding.bound else settings_key(state.current())
    with contextlib.suppress(Exception):  # a slotted/frozen object cannot be tracked
        setattr(instance, _TAG, tag)
    return wrapped(*args, **kwargs)


def _check_call(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """Around CompiledFxGraph.__call__: warn once if it runs in a block it was not made in."""
    settings = state.current()
    if settings is not None and instance is not None:
        made = getattr(instance, _TAG, UNTAGGED)
        if made not in (_BOUND, settings_key(settings)) and \
                not getattr(instance, _WARNED, False):
            with contextlib.suppress(Exception):
                setattr(instance, _WARNED, True)
            where = "outside any override block" if made == UNTAGGED else \
                "under different settings"
            name = getattr(instance, "_fx_graph_cache_key", None) or \
                getattr(instance, "cache_key", None) or ""
            warnings.warn(
                f"inductor_sm_override: a compiled graph {name[:16]} was compiled {where} and "
                "is now called inside an override block: it keeps its old kernels, so the "
                "override does nothing for it. Compile it (its first call) inside the block, "
                "call torch._dynamo.reset() before the block, or compile it with "
                "torch.compile(model, backend=iso.backend(...)) or iso.compile(...), whose "
                "settings are bound to the compiled function (its recompiles use them "
                "wherever they happen).", RuntimeWarning, stacklevel=2)
    return wrapped(*args, **kwargs)


# --- installation --------------------------------------------------------------------------


def _graph_class() -> Any:
    try:
        from torch._inductor import output_code
    except Exception:
        return None
    graph_cls = getattr(output_code, "CompiledFxGraph", None)
    owned = vars(graph_cls) if graph_cls is not None else {}
    return graph_cls if "__call__" in owned and "post_compile" in owned else None


def build_patches(plan: Any) -> list[Patch]:
    """Save / lookup / load hooks on ``FxGraphCache``; graph tagging (where as read)."""
    global _original_iterate
    patches: list[Patch] = []
    try:
        from torch._inductor.codecache import FxGraphCache
    except Exception:
        return patches
    owned = vars(FxGraphCache)
    for name, hook in (("load_with_key", _on_load), ("_save_graph", _on_save)):
        if isinstance(owned.get(name), staticmethod):
            patches.append(Patch(FxGraphCache, name, staticmethod(
                wrapt.FunctionWrapper(owned[name].__func__, hook))))
    iterate = inspect.getattr_static(FxGraphCache, "iterate_over_candidates", None)
    if isinstance(iterate, classmethod):
        _original_iterate = iterate.__func__
        patches.append(Patch(FxGraphCache, "iterate_over_candidates", classmethod(_candidates)))
    graph_cls = _graph_class()
    if graph_cls is not None:
        patches.append(Patch(graph_cls, "post_compile", wrapt.FunctionWrapper(
            vars(graph_cls)["post_compile"], _tag_compiled)))
    return patches


def build_call_patches() -> list[Patch]:
    """Call-time check of the lazy-compile trap (held by blocks only)."""
    graph_cls = _graph_class()
    if graph_cls is None:
        return []
    return [Patch(graph_cls, "__call__", wrapt.FunctionWrapper(vars(graph_cls)["__call__"],
                                                               _check_call))]
