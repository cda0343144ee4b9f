"""``iso.override(...)``: context manager and decorator; activation and ``status()``."""

from __future__ import annotations

import contextvars
import dataclasses
import inspect
from typing import Any

import wrapt

from ..compile_scope import CALL_CHECKS, PATCHES
from ..core import state
from ..core.settings import Settings
from ..hooks.gate import adopt_replacements, replacements
from ..torch_plan import compat


@dataclasses.dataclass
class Activation:
    entry: state.Entry
    patched: bool


def activate(layer: dict[str, Any]) -> Activation:
    """Push a layer for this thread/task and hold the patches (the first block installs
    them). The settings reach a compile at Inductor's compile entry (compile_scope.py)."""
    entry = state.push(layer)
    patched = False
    try:
        plan = compat.current_plan()
        if compat.check_plan(plan, entry.effective):
            PATCHES.acquire()
            patched = True
            CALL_CHECKS.acquire()
    except BaseException:
        deactivate(Activation(entry, patched))
        raise
    return Activation(entry, patched)


def deactivate(activation: Activation, exc_info: tuple = (None, None, None)) -> None:
    """End a block: pop its layer, release the patches (the last one uninstalls)."""
    try:
        state.pop(activation.entry)
    finally:
        if activation.patched:
            activation.patched = False
            CALL_CHECKS.release()
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

    Keys: torch_version, supported, tested, problems, sites (binding sites of the gate),
    hooks, config_scope ("thread": Inductor's config per thread, torch >= 2.13;
    "process": process-global), patched, active (effective settings dict or None), depth,
    refcount, base (env layer), gate_replaced_by (site -> the function another library put
    there while the toolkit held it; the toolkit wraps it and leaves it in place).
    """
    plan = compat.current_plan()
    settings = state.current()
    base = state.base()
    info = plan.describe()
    replaced = adopt_replacements(plan, PATCHES) if PATCHES.installed else replacements()
    info.update(
        patched=PATCHES.installed,
        active=settings.as_dict() if settings is not None else None,
        depth=state.depth(),
        refcount=PATCHES.count,
        base=None if base is None else {"source": base.source, **base.settings.as_dict()},
        gate_replaced_by=replaced,
    )
    return info
