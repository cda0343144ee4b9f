"""``iso.override(...)``: context manager and decorator; activation and ``status()``."""

from __future__ import annotations

import contextvars
import dataclasses
import inspect
from typing import Any

import wrapt

from . import compat, state
from .config_scope import ConfigChanges
from .patching import PatchSet
from .settings import Settings


def _build() -> list:
    from . import autotune, cache, gate

    plan = compat.current_plan()
    patches = gate.build_patches(plan)
    if plan.selector is not None:
        patches += autotune.build_patches(plan.selector)
    return patches + cache.build_patches()


def _edge() -> None:
    from .gate import clear_caches

    clear_caches(compat.current_plan())


PATCHES = PatchSet(_build, _edge)


def _block_config(settings: Settings) -> ConfigChanges | None:
    import torch._inductor.config as config

    from .autotune import block_changes

    changes = block_changes(settings)
    return ConfigChanges(config, changes) if changes else None


def _functorch_config(settings: Settings) -> ConfigChanges | None:
    from .training import functorch_config

    return functorch_config(settings)


# Per-block enter hooks: name -> factory(settings) returning None, a ``ConfigChanges``
# (a torch config module and the values the block needs) or a context manager.
# ConfigChanges are applied through compat's config adapter: in the entering thread where
# torch's config is thread-local (>= 2.13), refcounted process-wide where it is not
# (first block applies, last block restores exactly). Return ConfigChanges for any torch
# config module; a bare ``module.patch(...)`` would leak across threads before 2.13.
BLOCK_HOOKS: dict[str, Any] = {"inductor_config": _block_config,
                               "functorch_config": _functorch_config}


def _enter_hook(factory: Any, settings: Settings) -> Any:
    made = factory(settings)
    if made is None:
        return None
    if isinstance(made, ConfigChanges):
        return compat.enter_config(made) if made.changes else None
    made.__enter__()
    return made


@dataclasses.dataclass
class Activation:
    entry: state.Entry
    patched: bool
    hooks: list[Any]


def activate(layer: dict[str, Any]) -> Activation:
    """Push a layer for this thread/task and install the patches if it is the first."""
    entry = state.push(layer)
    settings = entry.effective
    patched = False
    hooks: list[Any] = []
    try:
        plan = compat.current_plan()
        if compat.check_plan(plan, settings):
            PATCHES.acquire()
            patched = True
        for factory in list(BLOCK_HOOKS.values()):
            manager = _enter_hook(factory, settings)
            if manager is not None:
                hooks.append(manager)
    except BaseException:
        deactivate(Activation(entry, patched, hooks))
        raise
    return Activation(entry, patched, hooks)


def deactivate(activation: Activation, exc_info: tuple = (None, None, None)) -> None:
    """End a block: undo its hooks, pop its layer, release the patches (last one uninstalls)."""
    try:
        while activation.hooks:
            activation.hooks.pop().__exit__(*exc_info)
    finally:
        state.pop(activation.entry)
        if activation.patched:
            PATCHES.release()


class override:  # noqa: N801 - lower-case like contextlib.suppress: it is used as a keyword
    """Let Inductor use its Triton GEMM templates on GPUs with at least ``min_sms`` SMs.

    Use as ``with iso.override(...):`` or as a decorator on a function or ``async def``.
    Every argument is optional; see :class:`Settings` for their meaning. Nothing is
    patched until a block is entered; everything is restored when the last one ends.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._layer = Settings.validate_layer(**kwargs)
        Settings().merged(self._layer)  # validate the combination now, not at enter
        self._active: contextvars.ContextVar[tuple[Activation, ...]] = contextvars.ContextVar(
            f"inductor_sm_override_block_{id(self)}", default=()
        )

    @property
    def layer(self) -> dict[str, Any]:
        """The fields this block sets explicitly (inner blocks win per field)."""
        return dict(self._layer)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._layer.items())
        return f"override({args})"

    def __enter__(self) -> Settings:
        activation = activate(self._layer)
        self._active.set((*self._active.get(), activation))
        return activation.entry.effective

    def __exit__(self, *exc_info: Any) -> None:
        stack = self._active.get()
        if not stack:
            return
        self._active.set(stack[:-1])
        deactivate(stack[-1], exc_info)

    async def __aenter__(self) -> Settings:
        return self.__enter__()

    async def __aexit__(self, *exc_info: Any) -> None:
        self.__exit__(*exc_info)

    def __call__(self, function: Any) -> Any:
        layer = self._layer

        if inspect.iscoroutinefunction(function):

            async def run_async(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
                activation = activate(layer)
                try:
                    return await wrapped(*args, **kwargs)
                finally:
                    deactivate(activation)

            return wrapt.FunctionWrapper(function, run_async)

        def run(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
            activation = activate(layer)
            try:
                return wrapped(*args, **kwargs)
            finally:
                deactivate(activation)

        return wrapt.FunctionWrapper(function, run)


def status() -> dict[str, Any]:
    """Where the override stands in this thread/task and process.

    Keys: torch_version, supported, tested, patched, active (effective settings dict or
    None), sites (binding sites of the gate), depth, refcount, base (env layer), problems.
    """
    plan = compat.current_plan()
    settings = state.current()
    base = state.base()
    info = plan.describe()
    info.update(
        patched=PATCHES.installed,
        active=settings.as_dict() if settings is not None else None,
        depth=state.depth(),
        refcount=PATCHES.count,
        base=None if base is None else {"source": base.source, **base.settings.as_dict()},
    )
    return info
