"""Which ranks share a fleet leader, and through which of torch's stores they talk.

A group is the whole job (``fleet="job"``: the leader is global rank 0) or one node
(``fleet="node"``: local rank 0 of each node). Ranks come from the launcher's variables
(torchrun: ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``GROUP_RANK``;
SLURM: ``SLURM_PROCID``, ``SLURM_LOCALID``, ``SLURM_NODEID``), else the default process group.
The store is torch's own: under torchrun (``TORCHELASTIC_USE_AGENT_STORE=True``) the agent's
TCPStore, reached as torch's ``env://`` rendezvous reaches it (it exists before
``init_process_group``); else, once that has run, the default process group's store
(``distributed_c10d._get_default_store()``, 2.11 and 2.13); else none: the rank works alone
and its fleet events say why. Keys go under ``PrefixStore("inductor_sm_override/fleet/<run>/
<group>")`` (``<run>``: torchrun's run id and restart count: a restarted job never reads an
earlier attempt's keys). Nothing here raises: an unreachable store is a reason, not an error.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import socket
import threading
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("inductor_sm_override")

CONNECT_TIMEOUT_S = 30.0  # reaching torchrun's agent store (it is already running)
AGENT_STORE = "torchrun's agent store"
DEFAULT_STORE = "the default process group's store"


@dataclasses.dataclass(frozen=True)
class Group:
    """This process's place in its fleet group."""

    scope: str  # "job" or "node"
    name: str  # "job" or "node <id>"
    rank: int | None  # rank within the group (global rank / local rank)
    size: int | None  # ranks in the group, where known
    store: Any = None  # a torch Store holding this group's keys; None: none reachable
    store_kind: str = ""
    why_alone: str | None = None  # why this rank compiles without coordinating

    @property
    def leader(self) -> bool:
        return self.rank == 0

    @property
    def coordinated(self) -> bool:
        return self.store is not None and self.why_alone is None

    @property
    def leader_name(self) -> str:
        return "rank 0" if self.scope == "job" else "local rank 0"


def _int(environ: Mapping[str, str], *names: str) -> int | None:
    for name in names:
        raw = environ.get(name, "").strip()
        digits = raw.split("(")[0]  # SLURM_NTASKS_PER_NODE may read "8(x2)"
        if digits.isdigit():
            return int(digits)
    return None


def _dist() -> Any:
    try:
        import torch.distributed as dist

        return dist if dist.is_available() else None
    except Exception:
        return None


def _placement(scope: str, environ: Mapping[str, str]) -> tuple[str, int | None, int | None]:
    """(group name, rank in the group, group size)."""
    dist = _dist()
    initialized = dist is not None and dist.is_initialized()
    if scope == "job":
        rank = _int(environ, "RANK", "SLURM_PROCID")
        size = _int(environ, "WORLD_SIZE", "SLURM_NTASKS")
        if initialized:
            rank = dist.get_rank() if rank is None else rank
            size = dist.get_world_size() if size is None else size
        return "job", rank, size
    node = environ.get("GROUP_RANK") or environ.get("SLURM_NODEID") or socket.gethostname()
    rank = _int(environ, "LOCAL_RANK", "SLURM_LOCALID")
    size = _int(environ, "LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE")
    return f"node {node}", rank, size


def _run_id(environ: Mapping[str, str]) -> str:
    run = environ.get("TORCHELASTIC_RUN_ID") or environ.get("SLURM_JOB_ID") or "run"
    return f"{run}.{environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"


def _find_store(environ: Mapping[str, str]) -> tuple[Any, str, str | None]:
    """(store, which, why none)."""
    dist = _dist()
    if dist is None:
        return None, "", "torch.distributed is not available in this build"
    if environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and environ.get("MASTER_ADDR"):
        try:  # a client of torchrun's agent store, made by torch's env:// rendezvous
            timeout = datetime.timedelta(seconds=CONNECT_TIMEOUT_S)
            return next(dist.rendezvous("env://", timeout=timeout))[0], AGENT_STORE, None
        except Exception as exc:
            return None, "", f"torchrun's agent store unreachable ({type(exc).__name__}: {exc})"
    if dist.is_initialized():
        try:
            return dist.distributed_c10d._get_default_store(), DEFAULT_STORE, None
        except Exception as exc:
            return None, "", f"no default store ({type(exc).__name__}: {exc})"
    return None, "", ("no store: not under torchrun, and this compile ran before "
                      "init_process_group")


_groups: dict[tuple[int, str], Group] = {}
_lock = threading.Lock()


def group_for(scope: str, environ: Mapping[str, str] | None = None) -> Group:
    """This process's group for ``scope`` ("job" / "node"); cached once a store is found
    (a rank that found none looks again at its next compile: init_process_group may have
    run since)."""
    environ = os.environ if environ is None else environ
    key = (os.getpid(), scope)
    with _lock:
        found = _groups.get(key)
        dist = _dist()
        if found is not None and (found.store_kind != DEFAULT_STORE or (
                dist is not None and dist.is_initialized())):  # destroy_process_group: again
            return found
        group = _make(scope, environ)
        if group.store is not None:
            _groups[key] = group
        return group


def _make(scope: str, environ: Mapping[str, str]) -> Group:
    try:
        name, rank, size = _placement(scope, environ)
    except Exception as exc:
        return Group(scope, scope, None, None, why_alone=f"ranks unknown ({exc})")
    if rank is None:
        where = "RANK" if scope == "job" else "LOCAL_RANK"
        return Group(scope, name, None, size, why_alone=(
            f"rank unknown: no {where} variable (torchrun sets it) and no process group"))
    if size is not None and size <= 1:
        return Group(scope, name, rank, size, why_alone=f"the only rank of its {scope}")
    store, kind, why = _find_store(environ)
    if store is None:
        return Group(scope, name, rank, size, why_alone=why)
    try:
        from torch.distributed import PrefixStore

        prefix = f"inductor_sm_override/fleet/{_run_id(environ)}/{name}"
        return Group(scope, name, rank, size, PrefixStore(prefix, store), kind)
    except Exception as exc:
        return Group(scope, name, rank, size, why_alone=f"store unusable ({exc})")


def forget() -> None:
    """Drop the cached groups (tests)."""
    with _lock:
        _groups.clear()
