"""Which settings are active here: a ContextVar stack over a process-wide base layer.

Threads and asyncio tasks each see their own stack (a new thread starts empty; a task
starts with a copy of its creator's context). The env-var hook sets the base layer.
This module must not import torch.
"""

from __future__ import annotations

import contextvars
import dataclasses
import itertools
import threading
from collections.abc import Mapping
from typing import Any

from .settings import Settings

_ids = itertools.count(1)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One active block: its own explicit fields and the effective settings they give."""

    id: int
    layer: Mapping[str, Any]
    effective: Settings


_STACK: contextvars.ContextVar[tuple[Entry, ...]] = contextvars.ContextVar(
    "inductor_sm_override_stack", default=()
)


@dataclasses.dataclass
class BaseLayer:
    """The process-wide layer under every stack (from the environment)."""

    settings: Settings
    source: str


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


def _start() -> Settings:
    layer = _base
    return layer.settings if layer is not None else Settings()


def push(layer: Mapping[str, Any]) -> Entry:
    """Activate a block's layer on top of what is in force here; inner fields win."""
    stack = _STACK.get()
    below = stack[-1].effective if stack else _start()
    entry = Entry(next(_ids), dict(layer), below.merged(layer))
    _STACK.set((*stack, entry))
    return entry


def pop(entry: Entry) -> None:
    """End a block. Out-of-order ends are tolerated: blocks above it are recomposed."""
    stack = _STACK.get()
    kept = [e for e in stack if e.id != entry.id]
    if len(kept) == len(stack):
        return
    rebuilt: list[Entry] = []
    below = _start()
    for e in kept:
        e = Entry(e.id, e.layer, below.merged(e.layer))
        rebuilt.append(e)
        below = e.effective
    _STACK.set(tuple(rebuilt))


def depth() -> int:
    return len(_STACK.get())
