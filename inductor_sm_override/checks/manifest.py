"""What a compiled graph carries about itself: its manifest (who compiled it, what was checked).

A manifest holds the settings that change compiled code, the producer (host, rank, device
name and SM count, simulated and limited SMs, torch / triton / package versions, time) and,
per autotuned op of the graph, what was offered and kept, the winner, the checks that
passed, the choices rejected and where the op was tuned. It is sealed (format, version,
sha256 of its canonical JSON) and set on the graph object before torch pickles the entry,
so it is written in the same write as the graph, wherever the entry goes (local cache,
Redis, a portable bundle): graph and manifest cannot disagree.

- :func:`graph_scope` (a core/events ``GRAPH_SCOPES`` factory) collects the "autotune"
  events published while one graph compiles, in its compiling thread;
- :func:`build` / :func:`seal` make the envelope; :func:`unseal` checks one;
  :func:`assess` says why a manifest does not vouch for a hit here.
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

from ..core import __version__, events
from ..core.settings import Settings, settings_key
from ..torch_plan.hardware import device_info

FORMAT = "inductor_sm_override.manifest"
VERSION = 2
OP_FIELDS = ("name", "device", "sms", "shapes", "dtypes", "offered", "kept", "winner",
             "rejected", "origin", "verified_op", "winner_unchecked")


@dataclasses.dataclass
class GraphOps:
    """The ops autotuned while one graph was compiled (in its compiling thread)."""

    settings: Settings
    ops: list[dict[str, Any]] = dataclasses.field(default_factory=list)


_GRAPH: contextvars.ContextVar[GraphOps | None] = contextvars.ContextVar(
    "iso_graph_ops", default=None)


def _collect(event: dict[str, Any]) -> None:
    graph = _GRAPH.get()
    if graph is not None and event.get("event") == "autotune":
        op = {k: event.get(k) for k in OP_FIELDS}
        op["checks_passed"] = sorted(n for n, c in (event.get("checks") or {}).items()
                                     if c.get("passed") is True)
        graph.ops.append(op)


@contextlib.contextmanager
def graph_scope(settings: Settings) -> Iterator[GraphOps]:
    """Collect the ops of the graph compiled inside."""
    if _collect not in events.listeners:
        events.listeners.append(_collect)
    collected = GraphOps(settings)
    token = _GRAPH.set(collected)
    try:
        yield collected
    finally:
        _GRAPH.reset(token)


def current_graph() -> GraphOps | None:
    return _GRAPH.get()


def producer(settings: Settings, ops: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Who made the graph: host, rank, device, versions, time."""
    versions: dict[str, Any] = {"inductor_sm_override": __version__}
    for name in ("torch", "triton"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:
            versions[name] = None
    device = next((op["device"] for op in ops or () if op.get("device")), None)
    return {"host": socket.gethostname(), "pid": os.getpid(), "rank": _env_int("RANK"),
            "local_rank": _env_int("LOCAL_RANK"), "world_size": _env_int("WORLD_SIZE"),
            "device": device_info(settings, device), "versions": versions,
            "time": round(time.time(), 3)}


def _env_int(name: str) -> int | None:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        return None


def build(key: str, settings: Settings, ops: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The manifest of the graph with FX-graph-cache key ``key``."""
    return {"graph_key": key, "settings": settings.compiled(),
            "settings_key": settings_key(settings), "producer": producer(settings, ops),
            "ops": ops}


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
    if not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
        raise CorruptedManifestError("not a manifest envelope")
    if envelope.get("version") != VERSION:
        raise CorruptedManifestError(
            f"manifest version {envelope.get('version')!r}, expected {VERSION}")
    body = envelope.get("manifest")
    if not isinstance(body, dict):
        raise CorruptedManifestError("no manifest body")
    if hashlib.sha256(_canonical(body)).hexdigest() != envelope.get("sha256"):
        raise CorruptedManifestError("sha256 does not match the manifest body")
    for field in ("graph_key", "settings_key", "producer", "ops"):
        if field not in body:
            raise CorruptedManifestError(f"manifest has no {field!r}")
    return body


def assess(manifest: dict[str, Any], key: str, settings: Settings) -> list[str]:
    """Why ``manifest`` does not vouch for the graph ``key`` served here under
    ``settings`` (empty: it does)."""
    problems = []
    if manifest.get("graph_key") != key:
        problems.append("manifest of another graph key")
    if manifest.get("settings_key") != settings_key(settings):
        problems.append("compiled under other settings")
    made = (manifest.get("producer") or {}).get("device") or {}
    device = next((op.get("device") for op in manifest.get("ops") or () if op.get("device")),
                  None)
    here = device_info(settings, device)
    if made.get("type") != here["type"] or made.get("name") != here["name"]:
        problems.append(f"compiled for another device ({made.get('name')!r}, here "
                        f"{here['name']!r})")
    elif made.get("sms") != here["sms"]:
        problems.append(f"compiled on another SM count ({made.get('sms')}, here "
                        f"{here['sms']})")
    if manifest.get("ops") is None:
        problems.append("the producer did not record the graph's ops")
    unchecked = [str(op.get("name")) for op in manifest.get("ops") or ()
                 if op.get("winner_unchecked")]
    if unchecked:
        problems.append(f"the producer took {len(unchecked)} op(s) unchecked: "
                        + ", ".join(unchecked[:5]))
    return problems
