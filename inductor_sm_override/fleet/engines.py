"""Where decisions are kept, and a follower's bounded wait for its leader's.

One JSON text per decision key (fleet/decisions.py) in each of: the group's torch store
(group.py), for the ranks of one job attempt (``decision/<key>``; the leader counts what it
published in ``made``, which the stall rule reads); a directory under Inductor's cache dir
(``TORCHINDUCTOR_CACHE_DIR``, default ``/tmp/torchinductor_$USER``:
``iso_decisions/<key[:2]>/<key>.json``, replaced atomically), shared by the ranks of a node
and kept for later jobs; Redis, through torch's own client on the variables its remote
caches read (``TORCHINDUCTOR_REDIS_URL`` or ``_HOST``/``_PORT``, used when one is set):
``inductor_sm_override:decision:<key>``. Nothing here raises: a failing engine reads as
"no decision", an error only ends a wait.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .group import Group

log = logging.getLogger("inductor_sm_override")

STORE, DIR, REDIS = "the job's store", "the shared directory", "Redis"
MADE = "made"
POLL_S = 0.1
WAIT_SHARE = 0.5  # a wait lasts at most this share of the process group's timeout
REDIS_VARS = ("TORCHINDUCTOR_REDIS_URL", "TORCHINDUCTOR_REDIS_HOST", "TORCHINDUCTOR_REDIS_PORT")
REDIS_KEY = "inductor_sm_override:decision:"
FOUND, TIMEOUT, STALLED, STORE_ERROR = "found", "timeout", "stalled", "store_error"
_redis_clients: dict[tuple[str | None, ...], Any] = {}
_stalls: dict[str, int] = {}  # group name -> the leader's count when a wait last timed out
_lock = threading.Lock()


def parse(raw: Any) -> dict[str, Any] | None:
    """A decision read back (None: absent or not one)."""
    try:
        value = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except (TypeError, ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) and isinstance(value.get("choice"), str) else None


def _path(key: str) -> str:
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    return os.path.join(cache_dir(), "iso_decisions", key[:2], f"{key}.json")


def _redis() -> Any:
    """torch's Redis client (``RedisRemoteCacheBackend``) where a variable names a server."""
    where = tuple(os.environ.get(k) for k in REDIS_VARS)
    if not any(where):
        return None
    with _lock:
        if where not in _redis_clients:
            try:
                from torch._inductor.remote_cache import RedisRemoteCacheBackend

                _redis_clients[where] = RedisRemoteCacheBackend("inductor_sm_override")
            except Exception:  # no redis package
                _redis_clients[where] = None
        return _redis_clients[where]


def lookup(group: Group, key: str) -> tuple[dict[str, Any] | None, str | None]:
    """(decision, the engine it came from): the group's store, the directory, Redis."""
    readers = [(STORE, lambda: group.store.get(f"decision/{key}")
                if group.store.check([f"decision/{key}"]) else None)] \
        if group.coordinated else []
    readers += [(DIR, lambda: Path(_path(key)).read_text(encoding="utf-8")),
                (REDIS, lambda: _redis() and _redis().get(REDIS_KEY + key))]
    for engine, read in readers:
        try:
            found = parse(read())
        except Exception:  # absent, unreadable or unreachable: no decision from it
            continue
        if found is not None:
            return found, engine
    return None, None


def _replace(path: str, text: str) -> None:
    """Write ``path`` so that readers see the old file or the new one, never half."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(tmp, path)


def publish(group: Group, key: str, decision: dict[str, Any], skip: str | None) -> None:
    """Write ``decision`` to every engine but ``skip`` (where it came from)."""
    text = json.dumps(decision, sort_keys=True)
    writers = [(DIR, lambda: _replace(_path(key), text)),
               (REDIS, lambda: _redis() and _redis().put(REDIS_KEY + key, text.encode()))]
    if group.coordinated:
        writers.append((STORE, lambda: (group.store.set(f"decision/{key}", text),
                                        group.leader and group.store.add(MADE, 1))))
    for engine, write in writers:
        if engine != skip:
            try:
                write()
            except Exception:
                log.debug("fleet: writing to %s failed", engine, exc_info=True)


def pg_timeout_s() -> float:
    """The default process group's timeout (its backends' shortest), else c10d's default for
    this machine's backend (NCCL's where CUDA is, else gloo's)."""
    import torch
    import torch.distributed as dist
    from torch.distributed import constants

    try:
        if dist.is_available() and dist.is_initialized():
            group = dist.distributed_c10d._get_default_group()
            return min(group._get_backend(d).options._timeout.total_seconds()
                       for d in group._device_types)
    except Exception:
        log.debug("fleet: process group timeout not read", exc_info=True)
    nccl = getattr(constants, "default_pg_nccl_timeout", None)
    default = nccl if nccl is not None and torch.cuda.is_available() else \
        constants.default_pg_timeout
    return default.total_seconds()


def wait_bound(fleet_timeout_s: float) -> float:
    """How long a follower waits for one decision: ``fleet_timeout_s``, at most half the
    process group's timeout (a leader blocked in a collective must not be aborted)."""
    try:
        return max(0.0, min(fleet_timeout_s, WAIT_SHARE * pg_timeout_s()))
    except Exception:
        return max(0.0, min(fleet_timeout_s, 300.0))


def wait(group: Group, key: str, bound: float) -> tuple[dict[str, Any] | None, str, float]:
    """A follower waits for its leader's decision on ``key``: (decision, why the wait ended,
    seconds). After a wait timed out it waits again only once the leader has published
    something since (one timeout per stall, not one per op)."""
    store, started = group.store, time.monotonic()
    try:
        stalled = _stalls.get(group.name)
        if stalled is not None:
            if int(store.add(MADE, 0)) == stalled and not store.check([f"decision/{key}"]):
                return None, STALLED, time.monotonic() - started
            _stalls.pop(group.name, None)
        deadline = started + bound
        while True:
            if store.check([f"decision/{key}"]):
                found = parse(store.get(f"decision/{key}"))
                return found, FOUND if found else STORE_ERROR, time.monotonic() - started
            if time.monotonic() >= deadline:
                _stalls[group.name] = int(store.add(MADE, 0))
                return None, TIMEOUT, time.monotonic() - started
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
    except Exception:
        log.debug("fleet: store error while waiting", exc_info=True)
        return None, STORE_ERROR, time.monotonic() - started


def forget() -> None:
    """Drop stall marks and Redis clients (tests)."""
    with _lock:
        _stalls.clear()
        _redis_clients.clear()
