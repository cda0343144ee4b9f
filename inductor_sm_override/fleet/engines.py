"""Where decisions are kept, and the follower's bounded wait for its leader's.

Three engines, each a JSON text per decision key (fleet/decisions.py):

- the group's torch store (group.py: torchrun's agent store or the default process group's),
  for the ranks of one job attempt: ``decision/<key>``; the leader counts what it published in
  ``made`` (a follower's stall rule reads it);
- a directory under Inductor's cache dir (``TORCHINDUCTOR_CACHE_DIR``, default
  ``/tmp/torchinductor_$USER``): ``iso_decisions/<key[:2]>/<key>.json``, written atomically;
  shared by the ranks of a node and kept for a later job;
- Redis, when torch's remote-cache variables name a server (``TORCHINDUCTOR_REDIS_URL``, or
  ``TORCHINDUCTOR_REDIS_HOST``/``_PORT``): ``inductor_sm_override:decision:<key>``.

Nothing here raises: an engine that fails reads as "no decision" (and a broken Redis is not
asked again in this process); an error only ends a wait.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from typing import Any

from .group import Group

log = logging.getLogger("inductor_sm_override")

STORE, DIR, REDIS = "the job's store", "the shared directory", "Redis"
MADE = "made"
POLL_S = 0.1
WAIT_SHARE = 0.5  # a wait lasts at most this share of the process group's timeout
REDIS_TIMEOUT_S = 5.0
FOUND, TIMEOUT, STALLED, STORE_ERROR = "found", "timeout", "stalled", "store_error"
_redis: dict[str, Any] = {}
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


def _client() -> Any:
    """A Redis client on torch's remote-cache variables, None without them (or broken)."""
    env = os.environ
    where = env.get("TORCHINDUCTOR_REDIS_URL") or (
        f"{env.get('TORCHINDUCTOR_REDIS_HOST', 'localhost')}:"
        f"{env.get('TORCHINDUCTOR_REDIS_PORT', '6379')}")
    if not any(k in env for k in ("TORCHINDUCTOR_REDIS_URL", "TORCHINDUCTOR_REDIS_HOST",
                                  "TORCHINDUCTOR_REDIS_PORT")):
        return None
    with _lock:
        if where not in _redis:
            try:
                import redis

                limits = {"socket_timeout": REDIS_TIMEOUT_S,
                          "socket_connect_timeout": REDIS_TIMEOUT_S}
                url = env.get("TORCHINDUCTOR_REDIS_URL")
                host, _, port = where.rpartition(":")
                _redis[where] = redis.Redis.from_url(url, **limits) if url else \
                    redis.Redis(host=host, port=int(port), **limits)
            except Exception:
                log.debug("fleet: no Redis client", exc_info=True)
                _redis[where] = None
        return _redis[where]


def _broken(client: Any) -> None:
    with _lock:
        for where, known in list(_redis.items()):
            if known is client:
                _redis[where] = None


def lookup(group: Group, key: str) -> tuple[dict[str, Any] | None, str | None]:
    """(decision, the engine it came from): the group's store, the directory, Redis."""
    if group.coordinated:
        try:
            if group.store.check([f"decision/{key}"]):
                found = parse(group.store.get(f"decision/{key}"))
                if found is not None:
                    return found, STORE
        except Exception:
            log.debug("fleet: store lookup failed", exc_info=True)
    try:
        with open(_path(key), encoding="utf-8") as file:
            found = parse(file.read())
        if found is not None:
            return found, DIR
    except (OSError, ImportError):
        pass
    client = _client()
    if client is not None:
        try:
            found = parse(client.get(f"inductor_sm_override:decision:{key}"))
            if found is not None:
                return found, REDIS
        except Exception:
            log.debug("fleet: Redis lookup failed", exc_info=True)
            _broken(client)
    return None, None


def publish(group: Group, key: str, decision: dict[str, Any], skip: str | None) -> None:
    """Write ``decision`` to every engine but ``skip`` (where it came from)."""
    text = json.dumps(decision, sort_keys=True)
    if skip != DIR:
        try:
            path = _path(key)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(text)
            os.replace(tmp, path)  # readers see the old file or the new one, never half
        except Exception:
            log.debug("fleet: directory write failed", exc_info=True)
    client = _client() if skip != REDIS else None
    if client is not None:
        try:
            client.set(f"inductor_sm_override:decision:{key}", text)
        except Exception:
            log.debug("fleet: Redis write failed", exc_info=True)
            _broken(client)
    if group.coordinated and skip != STORE:
        try:
            group.store.set(f"decision/{key}", text)
            if group.leader:
                group.store.add(MADE, 1)
        except Exception:
            log.debug("fleet: store write failed", exc_info=True)


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
        _redis.clear()
