"""Keep Inductor's caches honest across settings.

- FX graph cache (and the AOT autograd cache built on its key): salted. During a compile
  under override settings (compile_scope.py, in the compiling thread)
  ``config.post_grad_custom_post_pass`` becomes a no-op pass (wrapping the user's own
  passes, which still run) whose ``uuid()`` encodes the settings that change what is
  compiled, so a graph compiled under one set of settings (or none) is never served under
  another, and the same settings still hit, in any process.
- Autotune caches (local / remote): switched off in compiles under verified settings
  (autotune.py), so an unverified winner can never skip verification and a rejected one
  is never stored.
- The lazy-compile trap: graphs are tagged with the settings they were compiled under;
  running one inside a block whose settings differ warns once per graph (not for graphs of
  ``iso.backend``, whose settings are bound on purpose).
- Cache hits are visible: a graph that Inductor loads from the FX graph cache inside a
  block (``FxGraphCache.load_with_key``, the one loader of torch 2.11 and 2.13, used by
  compile_fx and by the AOT autograd cache) was autotuned earlier under the same settings
  and is not autotuned now: it gives a ``cache_hit`` event (graph key, settings, source
  local/remote, and from the graph's manifest its producer and ops, or why it is
  unverified: provenance.py), kept in :func:`cache_hits` and written to the report. Only a
  load whose key was salted with the settings in force is such a hit. With
  ``require_manifest`` an unverified entry is a miss ('cache_refused' event).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import threading
import time
import warnings
from typing import Any

import wrapt

from . import state
from .patching import Patch
from .settings import Settings

log = logging.getLogger("inductor_sm_override")

# Fields that do not change what Inductor compiles: left out of the key.
_NOT_COMPILED = ("report", "quiet", "strict", "require_manifest", "fleet", "fleet_timeout_s")
_UNTAGGED = "<compiled outside any override block>"


@functools.lru_cache(maxsize=256)
def settings_key(settings: Settings | None) -> str:
    """The part of the settings that changes compiled code, as a stable text."""
    if settings is None:
        return _UNTAGGED
    from . import __version__

    fields = {k: v for k, v in settings.as_dict().items() if k not in _NOT_COMPILED}
    text = ";".join(f"{k}={v!r}" for k, v in sorted(fields.items()))
    return f"inductor_sm_override-{__version__}:{text}"


def _pass_base() -> type:
    from torch._inductor import custom_graph_pass as cgp

    return getattr(cgp, "CustomInferenceAwareGraphPass", None) or cgp.CustomGraphPass


_salted_class: type | None = None


def _salted_pass_class() -> type:
    global _salted_class
    if _salted_class is not None:
        return _salted_class
    base = _pass_base()
    inference_aware = base.__name__ == "CustomInferenceAwareGraphPass"

    class SaltedPass(base):  # type: ignore[misc, valid-type]
        """Runs the user's post-grad passes unchanged; its uuid adds the override settings."""

        def __init__(self, inner: tuple[Any, ...], salt: str) -> None:
            self.inner = inner
            self.salt = salt

        def __call__(self, graph: Any, is_inference: bool | None = None) -> None:
            for item in self.inner:
                if inference_aware and isinstance(item, base) and is_inference is not None:
                    item(graph, is_inference=is_inference)
                else:
                    item(graph)

        def uuid(self) -> Any:
            inner = tuple(item.uuid() for item in self.inner)
            digest = hashlib.sha256(self.salt.encode()).hexdigest()
            return (inner, f"inductor_sm_override:{digest}")

    _salted_class = SaltedPass
    return SaltedPass


def salted_post_pass(current: Any, settings: Settings) -> Any | None:
    """The value for ``config.post_grad_custom_post_pass`` in a compile under ``settings``,
    or None to leave it.

    The user's passes are kept (run first). If one of them is a plain callable (no uuid),
    torch already bypasses the FX graph cache, so nothing needs salting.
    """
    from torch._inductor.custom_graph_pass import CustomGraphPass

    if _salted_class is not None and isinstance(current, _salted_class):
        inner: tuple[Any, ...] = current.inner  # a nested block: salt the user's passes once,
        # so the same effective settings give the same key however the blocks are nested
    elif current is None:
        inner = ()
    elif isinstance(current, (list, tuple)):
        inner = tuple(current)
    else:
        inner = (current,)
    if not all(isinstance(item, CustomGraphPass) for item in inner):
        return None
    return _salted_pass_class()(inner, settings_key(settings))


# --- the lazy-compile trap -----------------------------------------------------------------

_TAG = "_inductor_sm_override_compiled_under"
_WARNED = "_inductor_sm_override_trap_warned"


_BOUND = "<bound to its compiled function by iso.backend>"


def _tag_compiled(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """Around CompiledFxGraph.post_compile (fresh compiles and cache loads alike): remember
    the settings the graph was made (or loaded) under."""
    from .compile_scope import current

    binding = current()
    tag = _BOUND if binding is not None and binding.bound else settings_key(state.current())
    with contextlib.suppress(Exception):  # a slotted/frozen object cannot be tracked
        setattr(instance, _TAG, tag)
    return wrapped(*args, **kwargs)


def _check_call(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """Around CompiledFxGraph.__call__: warn once if it runs in a block it was not made in."""
    settings = state.current()
    if settings is not None and instance is not None:
        made = getattr(instance, _TAG, _UNTAGGED)
        if made != _BOUND and made != settings_key(settings) and \
                not getattr(instance, _WARNED, False):
            with contextlib.suppress(Exception):
                setattr(instance, _WARNED, True)
            _warn_trap(instance, made)
    return wrapped(*args, **kwargs)


def _warn_trap(graph: Any, made: str) -> None:
    where = "outside any override block" if made == _UNTAGGED else "under different settings"
    name = getattr(graph, "_fx_graph_cache_key", None) or getattr(graph, "cache_key", None) or ""
    message = (
        f"inductor_sm_override: a compiled graph {name[:16]} was compiled {where} and is now "
        "called inside an override block: it keeps its old kernels, so the override does "
        "nothing for it. Compile it (its first call) inside the block, call "
        "torch._dynamo.reset() before the block, or compile it with "
        "torch.compile(model, backend=iso.backend(...)) or iso.compile(...), whose settings "
        "are bound to the compiled function (its recompiles use them wherever they happen)."
    )
    warnings.warn(message, RuntimeWarning, stacklevel=3)


# --- cache hits ------------------------------------------------------------------------------

_hits: list[dict[str, Any]] = []
_refused: list[dict[str, Any]] = []
_hits_lock = threading.Lock()
MAX_HITS = 10_000
_LOAD_PARAMS = ("key", "debug_lines", "example_inputs", "local", "remote_cache", "is_backward")


def cache_hits() -> list[dict[str, Any]]:
    """The 'cache_hit' events of this process (oldest first): graphs served from Inductor's
    FX graph cache inside a block, i.e. autotuned earlier under the same settings."""
    with _hits_lock:
        return [dict(hit) for hit in _hits]


def clear_cache_hits() -> None:
    with _hits_lock:
        _hits.clear()
        _refused.clear()


def salted_for(settings: Settings) -> bool:
    """Whether this thread's FX-graph-cache key is salted with ``settings`` right now."""
    import torch._inductor.config as config

    current = getattr(config, "post_grad_custom_post_pass", None)
    return _salted_class is not None and isinstance(current, _salted_class) and \
        current.salt == settings_key(settings)


def _on_load(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """Around FxGraphCache.load_with_key: a hit under override settings becomes a cache_hit
    event, if its key was salted with the settings in force (a graph made under them), with
    its source and what its manifest says (provenance.py); with ``require_manifest`` an
    unverified entry is a miss. Under ``fleet`` settings a follower first waits for the
    leader's graph (fleet.py)."""
    from .compile_scope import graph_scope

    settings = state.current()
    if settings is None:
        return wrapped(*args, **kwargs)
    from . import fleet, provenance

    bound = dict(zip(_LOAD_PARAMS, args, strict=False))
    bound.update(kwargs)
    key = str(bound.get("key"))
    salted = salted_for(settings)
    # one graph (AOT autograd's cache bypasses inner compiles)
    with graph_scope(settings), provenance.judging(settings) as load:
        if salted and settings.fleet is not None:
            fleet.before_lookup(key, bool(bound.get("local")), bound.get("remote_cache"))
        result = wrapped(*args, **kwargs)
        if salted:
            result = _judged(settings, key, bool(bound.get("is_backward")), load, result)
            if settings.fleet is not None:
                fleet.after_lookup(_served(result))
    return result


def _served(result: Any) -> bool:
    try:
        return result[0] is not None
    except Exception:
        return False


def _judged(settings: Settings, key: str, backward: bool, load: Any, result: Any) -> Any:
    """The lookup's result after judging: a cache_hit event, or a miss where
    ``require_manifest`` refuses the entry."""
    from . import provenance

    try:
        for refused in load.refused:
            _record_refusal(settings, key, refused)
        graph, info = result
        if graph is None:
            return result
        verdict = provenance.verdict_of(load, graph)
        if verdict is None:  # served without passing the judging lookup
            verdict = provenance.judge(graph, key, True, None, settings)
            verdict.reasons.insert(0, "source unknown (not seen by the lookup hook)")
        if verdict.unverified and settings.require_manifest:
            return _as_miss(settings, key, verdict, info)
        _record_hit(settings, key, backward, info if isinstance(info, dict) else {}, verdict)
    except Exception:  # visibility must never break a compile
        log.debug("cache_hit event failed", exc_info=True)
    return result


def _as_miss(settings: Settings, key: str, verdict: Any, info: Any) -> tuple[None, Any]:
    """A hit ``require_manifest`` refuses: what load_with_key returns for a miss."""
    from torch._dynamo.utils import counters

    counters["inductor"]["fxgraph_cache_hit"] -= 1
    counters["inductor"]["fxgraph_cache_miss"] += 1
    _record_refusal(settings, key, verdict)
    info = dict(info) if isinstance(info, dict) else {}
    info["cache_state"] = "miss"
    info.pop("time_saved_ns", None)
    return None, info


def _provenance(verdict: Any) -> dict[str, Any]:
    body = verdict.manifest or {}
    return {
        "source": verdict.source,
        "producer": body.get("producer"),
        "ops": body.get("ops"),
        "manifest_sha256": verdict.sha256,
        "unverified": verdict.unverified,
        "reasons": list(verdict.reasons),
        "notes": list(verdict.notes),
    }


def _record_refusal(settings: Settings, key: str, verdict: Any) -> None:
    """A cache entry ``require_manifest`` turned into a miss: a 'cache_refused' event."""
    from .report import emit

    event = {"event": "cache_refused", "key": key, **_provenance(verdict),
             "settings_key": settings_key(settings), "at": round(time.time(), 3)}
    with _hits_lock:
        _refused.append(event)
        del _refused[:-MAX_HITS]
    emit(settings, event)


def cache_refusals() -> list[dict[str, Any]]:
    """The 'cache_refused' events of this process: entries ``require_manifest`` refused."""
    with _hits_lock:
        return [dict(event) for event in _refused]


def _record_hit(settings: Settings, key: str, backward: bool, info: dict[str, Any],
                verdict: Any) -> None:
    saved = info.get("time_saved_ns")
    event = {
        "event": "cache_hit",
        "key": key,
        "backward": backward,
        **_provenance(verdict),
        "settings": {k: v for k, v in settings.as_dict().items() if k not in _NOT_COMPILED},
        "settings_key": settings_key(settings),
        "time_saved_s": round(saved / 1e9, 4) if isinstance(saved, (int, float)) else None,
        "at": round(time.time(), 3),
    }
    with _hits_lock:
        _hits.append(event)
        del _hits[:-MAX_HITS]
    from .report import emit

    emit(settings, event)


def _load_patch() -> Patch | None:
    try:
        from torch._inductor.codecache import FxGraphCache
    except Exception:
        return None
    owned = vars(FxGraphCache).get("load_with_key")
    if not isinstance(owned, staticmethod):
        return None
    return Patch(FxGraphCache, "load_with_key",
                 staticmethod(wrapt.FunctionWrapper(owned.__func__, _on_load)))


def _graph_class() -> Any:
    try:
        from torch._inductor import output_code
    except Exception:
        return None
    graph_cls = getattr(output_code, "CompiledFxGraph", None)
    owned = vars(graph_cls) if graph_cls is not None else {}
    return graph_cls if "__call__" in owned and "post_compile" in owned else None


def build_patches() -> list[Patch]:
    """Compile-time hooks: tag compiled graphs with their settings; record FX-graph-cache
    hits; write and judge manifests (provenance.py)."""
    from . import provenance

    load = _load_patch()
    patches = [load] if load is not None else []
    patches += provenance.build_patches()
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
