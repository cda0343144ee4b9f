"""What a compiled graph carries about itself: its manifest (provenance).

A manifest says who compiled a graph and what was checked: the settings that change
compiled code, the producer (host, rank, device name and SM count, simulated and limited SMs,
torch / triton / package versions, time) and, per autotuned op of the graph, what was
offered and kept, the winner, the checks that passed and the choices rejected, and where
the op was tuned ("tuned here", "received from rank k").

- :func:`graph_scope` is entered around each graph compile (one forward or backward graph)
  in the compiling thread; the op records closed inside it belong to that graph.
- :func:`build` makes the manifest of the graph being saved; :func:`seal` wraps it in an
  envelope with its sha256 (what is stored, see manifest_store.py); :func:`unseal` checks
  an envelope; :func:`assess` says why a manifest does not vouch for a hit here (another
  device, SM count or settings, or ops the producer took unchecked).

This module imports torch only inside functions.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

from .records import OpRecord, listeners
from .settings import Settings

FORMAT = "inductor_sm_override.manifest"
VERSION = 1
TUNED_HERE = "tuned here"


def received_from(rank: int | None) -> str:
    """The origin of an op whose choice another rank autotuned."""
    return "received from another rank" if rank is None or rank < 0 else \
        f"received from rank {rank}"


# --- per-graph collection ------------------------------------------------------------------


@dataclasses.dataclass
class GraphOps:
    """The op records closed while one graph was compiled (in its compiling thread)."""

    settings: Settings
    ops: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    started: float = dataclasses.field(default_factory=time.time)


_GRAPH: contextvars.ContextVar[GraphOps | None] = contextvars.ContextVar(
    "inductor_sm_override_graph_ops", default=None)


@contextlib.contextmanager
def graph_scope(settings: Settings) -> Iterator[GraphOps]:
    """Collect the ops of the graph compiled inside (a ``GRAPH_HOOKS`` factory)."""
    _ensure_listener()
    collected = GraphOps(settings)
    token = _GRAPH.set(collected)
    try:
        yield collected
    finally:
        _GRAPH.reset(token)


def current_graph() -> GraphOps | None:
    """The graph being compiled in this thread/context, or None."""
    return _GRAPH.get()


def _collect(record: OpRecord) -> None:
    graph = _GRAPH.get()
    if graph is not None:
        graph.ops.append(op_summary(record))


def _ensure_listener() -> None:
    if not any(item is _collect for item in listeners):
        listeners.append(_collect)


def op_summary(record: OpRecord) -> dict[str, Any]:
    """One op of a manifest: what was offered, kept, checked, rejected, and the winner."""
    passed = sorted(n for n, c in record.checks.items() if c.get("passed") is True)
    return {
        "name": record.name,
        "device": record.device,
        "sms": record.sms,
        "shapes": record.shapes,
        "dtypes": record.dtypes,
        "offered": list(record.offered),
        "kept": list(record.kept),
        "winner": record.winner,
        "checks_passed": passed,
        "rejected": dict(record.rejected),
        "origin": record.origin,
        "verified_op": record.verified_op,
        "winner_unchecked": record.winner_unchecked,
    }


# --- building and sealing ------------------------------------------------------------------


def compiled_settings(settings: Settings) -> dict[str, Any]:
    """The settings that change compiled code (what the FX-graph-cache salt covers)."""
    from .cache import _NOT_COMPILED

    return {k: v for k, v in settings.as_dict().items() if k not in _NOT_COMPILED}


def device_info(settings: Settings | None, ops: list[dict[str, Any]] | None = None
                ) -> dict[str, Any]:
    """The device the graph is compiled for, as Inductor sees it: type, name, real SM
    count, the simulated one (``simulate_sms``) and the one this thread's work is limited
    to (``iso.limit_sms``; timings, hence winners, were taken on that many SMs)."""
    wanted = next((op["device"] for op in ops or () if op.get("device")), None)
    info: dict[str, Any] = {"type": "cpu", "name": "cpu", "sms": None, "simulated_sms": None,
                            "limited_sms": None}
    try:
        import torch

        from .limit import limited_sms

        kind = (wanted or "").split(":")[0]
        if kind in ("", "cuda") and torch.cuda.is_available():
            index = int(wanted.split(":")[1]) if wanted and ":" in wanted else \
                torch.cuda.current_device()
            get_props = torch.cuda.get_device_properties
            props = getattr(get_props, "__wrapped__", get_props)(index)  # not simulated
            info = {"type": "cuda", "name": props.name, "sms": props.multi_processor_count,
                    "simulated_sms": None, "limited_sms": limited_sms(index)}
    except Exception:
        pass
    if settings is not None and settings.simulate_sms is not None and info["type"] != "cpu":
        info["simulated_sms"] = settings.simulate_sms
    return info


def producer(settings: Settings, ops: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Who made the graph: host, rank, device, versions, time."""
    from . import __version__

    versions: dict[str, Any] = {"inductor_sm_override": __version__}
    try:
        import torch

        versions["torch"] = torch.__version__
    except Exception:
        versions["torch"] = None
    try:
        import triton

        versions["triton"] = triton.__version__
    except Exception:
        versions["triton"] = None
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "rank": _env_int("RANK"),
        "local_rank": _env_int("LOCAL_RANK"),
        "world_size": _env_int("WORLD_SIZE"),
        "device": device_info(settings, ops),
        "versions": versions,
        "time": round(time.time(), 3),
    }


def _env_int(name: str) -> int | None:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        return None


def build(key: str, settings: Settings, ops: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The manifest of the graph with FX-graph-cache key ``key``."""
    from .cache import settings_key

    return {
        "graph_key": key,
        "settings": compiled_settings(settings),
        "settings_key": settings_key(settings),
        "producer": producer(settings, ops),
        "ops": ops,
    }


def _canonical(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), default=str,
                      allow_nan=False).encode()


def seal(manifest: dict[str, Any]) -> dict[str, Any]:
    """The stored form: the manifest with its format, version and sha256."""
    body = json.loads(_canonical(manifest))  # JSON-clean (tuples -> lists, NaN refused)
    return {"format": FORMAT, "version": VERSION,
            "sha256": hashlib.sha256(_canonical(body)).hexdigest(), "manifest": body}


class CorruptedManifestError(ValueError):
    """An envelope that is not a well-formed, intact manifest."""


def unseal(envelope: Any) -> dict[str, Any]:
    """The manifest inside ``envelope``; raises :class:`CorruptedManifestError` naming
    what is wrong."""
    if isinstance(envelope, (bytes, str)):
        try:
            envelope = json.loads(envelope)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CorruptedManifestError(f"not JSON ({exc})") from None
    if not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
        raise CorruptedManifestError("not a manifest envelope")
    if envelope.get("version") != VERSION:
        raise CorruptedManifestError(
            f"manifest version {envelope.get('version')!r}, expected {VERSION}")
    body = envelope.get("manifest")
    if not isinstance(body, dict):
        raise CorruptedManifestError("no manifest body")
    digest = hashlib.sha256(_canonical(body)).hexdigest()
    if digest != envelope.get("sha256"):
        raise CorruptedManifestError("sha256 does not match the manifest body")
    for field in ("graph_key", "settings_key", "producer", "ops"):
        if field not in body:
            raise CorruptedManifestError(f"manifest has no {field!r}")
    return body


# --- judging a hit -------------------------------------------------------------------------


def assess(manifest: dict[str, Any], key: str, settings: Settings) -> list[str]:
    """Why ``manifest`` does not vouch for the graph ``key`` served here under
    ``settings`` (empty: it does)."""
    from .cache import settings_key

    problems = []
    if manifest.get("graph_key") != key:
        problems.append("manifest of another graph key")
    if manifest.get("settings_key") != settings_key(settings):
        problems.append("compiled under other settings")
    made = (manifest.get("producer") or {}).get("device") or {}
    here = device_info(settings, manifest.get("ops"))
    if made.get("type") != here["type"] or made.get("name") != here["name"]:
        problems.append(f"compiled for another device ({made.get('name')!r}, here "
                        f"{here['name']!r})")
    elif made.get("sms") != here["sms"]:
        problems.append(f"compiled on another SM count ({made.get('sms')}, here "
                        f"{here['sms']})")
    if manifest.get("ops") is None:
        problems.append("the producer did not record the graph's ops")
    unchecked = [op.get("name") for op in manifest.get("ops") or ()
                 if op.get("winner_unchecked")]
    if unchecked:
        problems.append(f"the producer took {len(unchecked)} op(s) unchecked: "
                        + ", ".join(str(n) for n in unchecked[:5]))
    return problems
