"""Events: hooks publish, subscribers (the JSONL report, manifests, the fleet, tools) listen.

:func:`publish` sends one event (a JSON-able dict with an ``"event"`` key: "start", "gate",
"autotune", "fusion", "cache_hit", "cache_refused", "fleet", "fallback", "choice") to the
in-process :data:`listeners` and to the report file of the settings it was made under.
Report lines are written with one ``os.write`` on an ``O_APPEND`` file, so threads and
torchrun ranks append to one file without interleaving; the path may contain ``{rank}``
(``$RANK``, else 0) and ``{pid}``. :func:`graph_scope` enters the subscribers' per-graph
scopes (:data:`GRAPH_SCOPES`) around each graph compiled or loaded under settings.
Nothing here raises into a compile. This module imports no torch at import time.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import fcntl
import json
import logging
import math
import os
import platform
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import __version__
from .settings import Settings, resolve_path

log = logging.getLogger("inductor_sm_override")

listeners: list[Callable[[dict[str, Any]], None]] = []  # told of every published event
# factories ``scope(settings) -> context manager`` entered around each graph (manifests)
GRAPH_SCOPES: list[Callable[[Settings], contextlib.AbstractContextManager]] = []
_IN_GRAPH: contextvars.ContextVar[bool] = contextvars.ContextVar("iso_graph", default=False)
_writers: dict[str, ReportWriter] = {}
_lock = threading.Lock()
_gates_seen: set[tuple[Any, ...]] = set()
_unwritable: set[str] = set()  # report paths that failed: said once, not once per event


def publish(settings: Settings | None, event: dict[str, Any]) -> None:
    """Tell the listeners, write the report line, print the progress line. Never raises."""
    for listener in list(listeners):
        try:
            listener(event)
        except Exception:
            log.debug("event listener failed", exc_info=True)
    if settings is None:
        return
    if event.get("event") == "autotune" and progress_wanted(settings):
        print(progress_line(event), file=sys.stderr, flush=True)
    if settings.report is None:
        return
    if event.get("event") == "gate":  # one line per device and answer, not per lowering
        seen = (resolve_path(settings.report), event.get("device"), event.get("sms"),
                event.get("threshold"), event.get("answer"))
        if seen in _gates_seen:
            return
        _gates_seen.add(seen)
    if (path := resolve_path(settings.report)) in _unwritable:
        return
    try:
        writer(settings).write(_json_safe(event))
    except Exception as exc:  # a report must never break a compile
        _unwritable.add(path)
        print(f"inductor_sm_override: cannot write report {settings.report}: {exc} (no "
              "further events go to it)", file=sys.stderr)


@contextlib.contextmanager
def graph_scope(settings: Settings | None) -> Iterator[None]:
    """Enter :data:`GRAPH_SCOPES` around one graph (not again inside one)."""
    if settings is None or not GRAPH_SCOPES or _IN_GRAPH.get():
        yield
        return
    token = _IN_GRAPH.set(True)
    try:
        with contextlib.ExitStack() as stack:
            for scope in list(GRAPH_SCOPES):
                stack.enter_context(scope(settings))
            yield
    finally:
        _IN_GRAPH.reset(token)


# --- the JSONL report ------------------------------------------------------------------


class ReportWriter:
    """Appends JSON lines to one file; writes a "start" event first.

    Never holds a descriptor below 3 (torch 2.9.1 closes fd 0 in-process after loading a
    kernel, and the number goes to the next ``open``); each write checks that the
    descriptor is still this file (device, inode) and reopens the path otherwise.
    """

    _MIN_FD = 3

    def __init__(self, path: str, settings: Settings) -> None:
        self.path = resolve_path(path)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._fd = -1
        self._identity: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self._open()
        self.write(start_event(settings))

    def _open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if fd < self._MIN_FD:
            try:
                high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, self._MIN_FD)
            finally:
                os.close(fd)
            fd = high
        info = os.fstat(fd)
        self._fd, self._identity = fd, (info.st_dev, info.st_ino)

    def _still_ours(self) -> bool:
        try:
            info = os.fstat(self._fd)
        except OSError:
            return False
        return (info.st_dev, info.st_ino) == self._identity

    def write(self, event: dict[str, Any]) -> None:
        event = {"event": event.get("event", "?"), "time": round(time.time(), 3),
                 "pid": os.getpid(), "rank": os.environ.get("RANK"), **event}
        data = (json.dumps(event, default=str, allow_nan=False, separators=(",", ":"))
                + "\n").encode()
        with self._lock:
            if not self._still_ours():
                self._open()
            try:
                os.write(self._fd, data)
            except OSError as exc:
                if exc.errno != errno.EBADF:
                    raise
                self._open()
                os.write(self._fd, data)

    def close(self) -> None:
        with self._lock:
            if self._still_ours():
                os.close(self._fd)
            self._fd = -1


def writer(settings: Settings) -> ReportWriter:
    """The one writer of this process for ``settings.report``."""
    key = resolve_path(str(settings.report))
    with _lock:
        found = _writers.get(key)
        if found is None:
            found = _writers[key] = ReportWriter(str(settings.report), settings)
        return found


def start_event(settings: Settings) -> dict[str, Any]:
    info: dict[str, Any] = {"event": "start", "package": __version__,
                            "python": platform.python_version(), "settings": settings.as_dict()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["device"], info["sms"] = "cpu", None
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(torch.cuda.current_device())
            info["device"], info["sms"] = props.name, props.multi_processor_count
    except Exception:
        info["torch"] = None
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:
        info["triton"] = None
    return info


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# --- one line per autotuned op ------------------------------------------------------------


def progress_wanted(settings: Settings) -> bool:
    if settings.quiet is not None:
        return not settings.quiet
    try:
        return sys.stderr.isatty()
    except Exception:
        return False


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or abs(value) > 1e300:
        return None
    return float(value) if math.isfinite(value) else None


def split_timings(event: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """(template timings, extern timings) of an autotune event, run choices only."""
    externs = event.get("externs")
    externs = {str(e) for e in externs} if isinstance(externs, list) else set()
    timings = event.get("timings")
    timings = timings if isinstance(timings, dict) else {}
    run = {str(k): v for k, v in timings.items() if _number(v) is not None}
    return ({k: float(v) for k, v in run.items() if k not in externs},
            {k: float(v) for k, v in run.items() if k in externs})


def op_summary(event: dict[str, Any]) -> dict[str, Any]:
    """The numbers the report table and the progress line show for one autotune event."""
    templates, externs = split_timings(event)
    best_t = min(templates.values()) if templates else None
    best_e = min(externs.values()) if externs else None
    shapes = event.get("shapes")
    first = shapes[0] if isinstance(shapes, list) and shapes else None
    rejected = event.get("rejected")
    if isinstance(rejected, list):  # older logs: the names only
        rejected = {str(name): "" for name in rejected}
    by = event.get("rejected_by")
    return {
        "name": str(event.get("name")),
        "device": str(event.get("device") or ""),
        "shapes": "x".join(str(s) for s in first) if isinstance(first, list) and first else "?",
        "winner": str(event["winner"]) if event.get("winner") is not None else None,
        "template_ms": best_t,
        "extern_ms": best_e,
        "speedup": (best_e / best_t) if best_t and best_e else None,
        "run": len(templates) + len(externs),
        "capped": _count(event.get("capped")),
        "budget_dropped": _count(event.get("budget_dropped")),
        "rejected": _count(rejected),
        "reasons": {str(k): str(v) for k, v in rejected.items()}
        if isinstance(rejected, dict) else {},
        "rejected_by": {str(k): str(v) for k, v in by.items()} if isinstance(by, dict) else {},
        "seconds": _number(event.get("seconds")),
    }


def _count(value: Any) -> int:
    return len(value) if isinstance(value, (list, dict)) else 0


def progress_line(event: dict[str, Any]) -> str:
    s = op_summary(event)
    speed = f", {s['speedup']:.2f}x vs extern" if s["speedup"] else ""
    seconds = f"{s['seconds']:.2f} s" if s["seconds"] is not None else "? s"
    extra = "".join([f", {s['capped']} capped" if s["capped"] else "",
                     f", {s['budget_dropped']} dropped by the budget"
                     if s["budget_dropped"] else "",
                     f", {s['rejected']} rejected" if s["rejected"] else ""])
    return (f"inductor_sm_override: {s['name']} {s['device']}: {s['run']} "
            f"choices{extra}, {seconds}, winner {s['winner']}{speed}")
