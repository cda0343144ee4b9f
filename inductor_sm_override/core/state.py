"""Which settings are active here: a ContextVar stack over a process-wide base layer.

Threads and asyncio tasks each see their own stack (a new thread starts empty; a task
starts with a copy of its creator's context). The env-var hook sets the base layer.
Blocks push layers (inner fields win); a compile pushes the exact settings it compiles
under, or None for a plain compile (:func:`push_pinned`, compile_scope.py), so the gate
and the hooks read that compile's settings in whichever thread compiles. No torch here.
"""

from __future__ import annotations

import contextvars
import dataclasses
import itertools
import threading
from collections.abc import Mapping
from typing import Any

from .budget import Budget
from .settings import Settings

_ids = itertools.count(1)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One active block: its own explicit fields and the effective settings they give."""

    id: int
    layer: Mapping[str, Any]
    effective: Settings | None  # None: a plain compile pinned inside a block
    budget: Budget | None = None  # shared with inner blocks that do not set budget_s
    compile: Any = None  # a compile's binding (compile_scope.Binding): pinned, not a block


_STACK: contextvars.ContextVar[tuple[Entry, ...]] = contextvars.ContextVar(
    "inductor_sm_override_stack", default=()
)


@dataclasses.dataclass
class BaseLayer:
    """The process-wide layer under every stack (from the environment)."""

    settings: Settings
    source: str
    budget: Budget | None = None


_base: BaseLayer | None = None
_base_lock = threading.Lock()


def base() -> BaseLayer | None:
    return _base


def set_base(layer: BaseLayer | None) -> None:
    global _base
    with _base_lock:
        _base = layer


def current() -> Settings | None:
    """The settings in force in this thread/task, or None when no override is active."""
    stack = _STACK.get()
    if stack:
        return stack[-1].effective
    layer = _base
    return layer.settings if layer is not None else None


def current_budget() -> Budget | None:
    """The budget of the innermost block (or env layer) that set budget_s, here."""
    stack = _STACK.get()
    if stack:
        return stack[-1].budget
    layer = _base
    return layer.budget if layer is not None else None


def _start() -> tuple[Settings, Budget | None]:
    layer = _base
    if layer is None:
        return Settings(), None
    return layer.settings, layer.budget


def _budget_for(layer: Mapping[str, Any], below: Budget | None) -> Budget | None:
    if "budget_s" not in layer:
        return below
    seconds = layer["budget_s"]
    return None if seconds is None else Budget(seconds)


def push(layer: Mapping[str, Any]) -> Entry:
    """Activate a block's layer on top of what is in force here; inner fields win."""
    stack = _STACK.get()
    below, budget = (stack[-1].effective or Settings(), stack[-1].budget) if stack else \
        _start()
    entry = Entry(next(_ids), dict(layer), below.merged(layer), _budget_for(layer, budget))
    _STACK.set((*stack, entry))
    return entry


def push_pinned(binding: Any) -> Entry:
    """Make exactly ``binding.settings`` (and its budget) the ones in force here, whatever
    is below (a compile's own settings; None: plain torch, even inside a block)."""
    settings = binding.settings
    layer = settings.as_dict() if settings is not None else {}
    entry = Entry(next(_ids), layer, settings, binding.budget, binding)
    _STACK.set((*_STACK.get(), entry))
    return entry


def current_compile() -> Any:
    """The binding of the compile running in this thread/context (None: none)."""
    stack = _STACK.get()
    return stack[-1].compile if stack else None


def pop(entry: Entry) -> None:
    """End a block. Out-of-order ends are tolerated: blocks above it are recomposed."""
    stack = _STACK.get()
    kept = [e for e in stack if e.id != entry.id]
    if len(kept) == len(stack):
        return
    rebuilt: list[Entry] = []
    below, budget = _start()
    for e in kept:
        if e.compile is None:
            own = e.budget if "budget_s" in e.layer else budget
            e = Entry(e.id, e.layer, below.merged(e.layer), own)
        rebuilt.append(e)
        below, budget = e.effective or Settings(), e.budget
    _STACK.set(tuple(rebuilt))


def depth() -> int:
    return len(_STACK.get())
