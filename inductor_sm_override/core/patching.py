"""Refcounted install/uninstall of attribute patches with an exact undo stack.

Like pytest's monkeypatch: every change is recorded as (target, name, raw old value
from ``__dict__``) and undone in reverse order, so class descriptors (classmethod,
staticmethod) come back as the very objects that were there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("inductor_sm_override")

_MISSING = object()


@dataclass(frozen=True)
class Patch:
    """Set ``target.name`` to ``new`` (``target`` is a module or class)."""

    target: Any
    name: str
    new: Any


@dataclass(frozen=True)
class Append:
    """Append ``item`` to the list ``owner.attr`` (hook lists); undone by removing it."""

    owner: Any
    attr: str
    item: Any


@dataclass(frozen=True)
class _Undo:
    target: Any
    name: str
    old: Any
    new: Any = None  # what this set put there


class PatchSet:
    """Patches that go in on the first acquire and come out, exactly, on the last release.

    ``build`` returns the patches to apply; ``on_edge`` runs after install and after
    uninstall (cache clearing). Thread-safe.
    """

    def __init__(
        self,
        build: Callable[[], Iterable[Patch | Append]],
        on_edge: Callable[[], None] | None = None,
    ) -> None:
        self._build = build
        self._on_edge = on_edge
        self._lock = threading.RLock()
        self._count = 0
        self._undo: list[_Undo] = []

    @property
    def count(self) -> int:
        return self._count

    @property
    def installed(self) -> bool:
        return bool(self._undo)

    def acquire(self) -> None:
        with self._lock:
            if self._count == 0:
                self._install()
            self._count += 1

    def release(self) -> None:
        with self._lock:
            if self._count <= 0:
                return
            self._count -= 1
            if self._count == 0:
                self.uninstall()

    def _install(self) -> None:
        try:
            for patch in self._build():
                if isinstance(patch, Append):
                    getattr(patch.owner, patch.attr).append(patch.item)
                    self._undo.append(_Undo(patch.owner, patch.attr, patch))
                    continue
                old = vars(patch.target).get(patch.name, _MISSING)
                setattr(patch.target, patch.name, patch.new)
                self._undo.append(_Undo(patch.target, patch.name, old, patch.new))
        except BaseException:
            self.uninstall()
            raise
        self._edge()

    def adopt(self, target: Any, name: str, wrap: Callable[[Any], Any]) -> Any:
        """Someone else replaced ``target.name`` while this set holds it: put
        ``wrap(newcomer)`` there and make uninstall leave the newcomer in place (not what
        was there before this set). Returns the newcomer, or None when nothing changed."""
        with self._lock:
            for index, undo in enumerate(self._undo):
                if undo.target is not target or undo.name != name or \
                        isinstance(undo.old, Append):
                    continue
                present = vars(target).get(name, _MISSING)
                if present is undo.new or present is _MISSING:
                    return None
                new = wrap(present)
                setattr(target, name, new)
                self._undo[index] = _Undo(target, name, present, new)
                return present
        return None

    def uninstall(self) -> None:
        """Undo every patch in reverse order (also used to recover from a failed install)."""
        with self._lock:
            while self._undo:
                undo = self._undo.pop()
                if isinstance(undo.old, Append):
                    _remove(getattr(undo.target, undo.name, []), undo.old.item)
                elif undo.old is _MISSING:
                    delattr(undo.target, undo.name)
                else:
                    setattr(undo.target, undo.name, undo.old)
            self._count = 0
            self._edge()

    def _edge(self) -> None:
        if self._on_edge is None:
            return
        try:
            self._on_edge()
        except Exception:  # clearing a cache must never break the user's block
            log.debug("cache clearing failed", exc_info=True)


def _remove(items: list, item: Any) -> None:
    """Remove ``item`` by identity (the user may have cleared or replaced the list)."""
    for index, present in enumerate(items):
        if present is item:
            del items[index]
            return
