"""Keep Inductor's caches honest across settings.

- FX graph cache (and the AOT autograd cache built on its key): salted. Inside a block
  ``config.post_grad_custom_post_pass`` becomes a no-op pass (wrapping the user's own
  passes, which still run) whose ``uuid()`` encodes the settings that change what is
  compiled, so a graph compiled under one set of settings (or none) is never served under
  another, and the same settings still hit, in any process.
- Autotune caches (local / remote): switched off inside verified blocks (autotune.py), so
  an unverified winner can never skip verification and a rejected one is never stored.
- The lazy-compile trap: graphs are tagged with the settings they were compiled under;
  running one inside a block whose settings differ warns once per graph.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import warnings
from typing import Any

import wrapt

from . import state
from .patching import Patch
from .settings import Settings

log = logging.getLogger("inductor_sm_override")

# Fields that do not change what Inductor compiles: left out of the key.
_NOT_COMPILED = ("report", "quiet", "strict")
_UNTAGGED = "<compiled outside any override block>"


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
    """The value for ``config.post_grad_custom_post_pass`` in a block, or None to leave it.

    The user's passes are kept (run first). If one of them is a plain callable (no uuid),
    torch already bypasses the FX graph cache, so nothing needs salting.
    """
    from torch._inductor.custom_graph_pass import CustomGraphPass

    if current is None:
        inner: tuple[Any, ...] = ()
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


def _tag_compiled(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """Around CompiledFxGraph.post_compile (fresh compiles and cache loads alike): remember
    the settings the graph was made (or loaded) under."""
    with contextlib.suppress(Exception):  # a slotted/frozen object cannot be tracked
        setattr(instance, _TAG, settings_key(state.current()))
    return wrapped(*args, **kwargs)


def _check_call(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """Around CompiledFxGraph.__call__: warn once if it runs in a block it was not made in."""
    settings = state.current()
    if settings is not None and instance is not None:
        made = getattr(instance, _TAG, _UNTAGGED)
        if made != settings_key(settings) and not getattr(instance, _WARNED, False):
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
        "torch._dynamo.reset() before the block, or use iso.compile(...), which enters the "
        "settings on every call."
    )
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def build_patches() -> list[Patch]:
    """Tag compiled graphs and check them at call time (while any block is active)."""
    try:
        from torch._inductor import output_code
    except Exception:
        return []
    graph_cls = getattr(output_code, "CompiledFxGraph", None)
    owned = vars(graph_cls) if graph_cls is not None else {}
    if "__call__" not in owned or "post_compile" not in owned:
        return []
    return [
        Patch(graph_cls, "post_compile", wrapt.FunctionWrapper(owned["post_compile"],
                                                               _tag_compiled)),
        Patch(graph_cls, "__call__", wrapt.FunctionWrapper(owned["__call__"], _check_call)),
    ]
