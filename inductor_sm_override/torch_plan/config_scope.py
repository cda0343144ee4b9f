"""Apply a compile's changes to a torch config module (Inductor's, functorch's) and undo them.

Two layouts exist (compat decides which one the running torch has, see
``compat.config_adapter``):

- **thread** (torch >= 2.13): every config value is a ``ContextVar``, so an assignment
  changes only the current thread/task. The prior values are kept in the block's handle and
  assigned back on exit (like ``module.patch``, which however refuses to exit in another
  context than it entered: the env layer may be removed from another thread).
- **process** (torch < 2.13): config values are plain module state, seen by every thread.
  ``module.patch`` would restore whatever it saw on entry, so two threads that enter and
  leave blocks out of order leave a block's values behind forever. Here changes are
  refcounted per (module, key): the first holder records the original value, each holder
  sets its own value (the most recently entered live holder's value is in force), and the
  last holder to leave restores the original exactly. A value that user code assigns to
  a held key becomes the value restored when the last holder leaves (never lost).
  Compiles that need different values must not overlap there: compile_scope.py holds
  dynamo's compile lock for the whole compile on this layout.

This module must not import torch.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("inductor_sm_override")

THREAD = "thread"
PROCESS = "process"


@dataclasses.dataclass(frozen=True)
class ConfigChanges:
    """What a block factory returns to change a torch config module for the block."""

    module: Any  # a torch ConfigModule, e.g. torch._inductor.config
    changes: Mapping[str, Any]


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:
        return False


_NO_RAW = object()


def _raw(module: Any, key: str) -> Any:
    """What torch's ConfigModule holds as the user's value of ``key`` (its unset sentinel
    when none was set), where it is a plain attribute (process layout), else _NO_RAW."""
    entry = (vars(module).get("_config") or {}).get(key)
    raw = getattr(entry, "user_override", _NO_RAW)
    return _NO_RAW if type(raw).__name__ == "ContextVar" else raw


@dataclasses.dataclass
class _Key:
    original: Any
    applied: Any  # the value this mechanism last wrote
    holders: list[tuple[int, Any]]  # (token, value), in entry order
    raw: Any = _NO_RAW  # the original as torch held it (unset: the key reads as a default)


class ProcessConfig:
    """Refcounted process-wide config changes (torch < 2.13). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._keys: dict[tuple[int, str], _Key] = {}
        self._modules: dict[int, Any] = {}
        self._tokens = itertools.count(1)

    def held(self) -> dict[str, Any]:
        """``'module.key' -> value in force`` for every key a live block holds (tests)."""
        with self._lock:
            return {f"{self._modules[m].__name__}.{k}": s.applied
                    for (m, k), s in self._keys.items()}

    def enter(self, module: Any, changes: Mapping[str, Any]) -> Handle:
        token = next(self._tokens)
        done: list[str] = []
        with self._lock:
            try:
                for key, value in changes.items():
                    slot = self._keys.get((id(module), key))
                    if slot is None:
                        current = getattr(module, key)  # AttributeError for unknown keys
                        slot = _Key(current, current, [], _raw(module, key))
                        self._keys[(id(module), key)] = slot
                        self._modules[id(module)] = module
                    else:
                        self._notice_user(module, key, slot)
                    slot.holders.append((token, value))
                    done.append(key)
                    setattr(module, key, value)
                    slot.applied = value
            except BaseException:
                self._leave(module, token, done)
                raise
        return Handle(self, module, token, tuple(done))

    def _notice_user(self, module: Any, key: str, slot: _Key) -> None:
        """User code assigned the key while held: its value is the one to restore."""
        try:
            now = getattr(module, key)
        except Exception:
            return
        if not _same(now, slot.applied):
            slot.original = slot.applied = now
            slot.raw = _NO_RAW
            log.debug("config %s.%s was set by user code while held: restored to it",
                      getattr(module, "__name__", "?"), key)

    def _leave(self, module: Any, token: int, keys: tuple[str, ...] | list[str]) -> None:
        with self._lock:
            for key in reversed(list(keys)):
                slot = self._keys.get((id(module), key))
                if slot is None:
                    continue
                slot.holders = [h for h in slot.holders if h[0] != token]
                self._notice_user(module, key, slot)
                if slot.holders:
                    target = slot.holders[-1][1]
                else:
                    del self._keys[(id(module), key)]
                    target = slot.original
                try:
                    if not slot.holders and slot.raw is not _NO_RAW:  # exactly as it was
                        module._config[key].user_override = slot.raw
                        module._is_dirty = True  # torch's hash cache
                    elif not _same(target, slot.applied):
                        setattr(module, key, target)
                    slot.applied = target
                except Exception:  # restoring must never break the user's program
                    log.debug("could not restore config %s", key, exc_info=True)
            if not any(m == id(module) for m, _ in self._keys):
                self._modules.pop(id(module), None)


@dataclasses.dataclass
class Handle:
    """One block's hold on a config module; ``exit`` is idempotent."""

    owner: ProcessConfig | None
    module: Any
    token: int
    keys: tuple[str, ...]
    prior: dict[str, Any] | None = None  # thread layout: values before the block
    closed: bool = False
    revert: Any = None  # thread layout through torch's closure patcher

    def exit(self, *exc_info: Any) -> None:
        if self.closed:
            return
        self.closed = True
        if self.revert is not None:
            self.revert()
        elif self.prior is not None:
            for key, value in reversed(self.prior.items()):
                try:
                    setattr(self.module, key, value)
                except Exception:  # restoring must never break the user's program
                    log.debug("could not restore config %s", key, exc_info=True)
        elif self.owner is not None:
            self.owner._leave(self.module, self.token, self.keys)

    # context-manager form, so a Handle can sit where block hooks keep context managers
    def __enter__(self) -> Handle:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.exit(*exc_info)


PROCESS_CONFIG = ProcessConfig()


def enter_thread_local(module: Any, changes: Mapping[str, Any]) -> Handle:
    """Thread layout: set in this context; the handle puts back exactly what was there,
    a default left unset included (torch's ``_make_closure_patcher``, 2.13+), so restored
    keys still read as defaults (``_is_default``) and keep following their env vars."""
    for key in changes:
        getattr(module, key)  # AttributeError: unknown key, before anything changes
    patcher = getattr(module, "_make_closure_patcher", None)
    if callable(patcher):
        revert = patcher(**changes)()
        return Handle(None, module, 0, tuple(changes), revert=revert)
    prior = {key: getattr(module, key) for key in changes}
    handle = Handle(None, module, 0, tuple(changes), prior={})
    try:
        for key, value in changes.items():
            handle.prior[key] = prior[key]
            setattr(module, key, value)
    except BaseException:
        handle.exit()
        raise
    return handle
