"""Where manifests live: next to their graph, in the same backend.

- local: ``<inductor cache dir>/fxgraph/<key[1:3]>/<key>.<sha>.iso-manifest.json``, beside
  the graph's own folder ``.../<key>/`` (Inductor's local lookup lists only that folder, so
  it never sees the manifest; clearing Inductor's FX-graph cache removes both), written
  with torch's atomic writer. ``<sha>`` (16 hex digits of the manifest's sha256) keeps
  apart the entries one key holds for different shape guards;
- remote: through the very ``RemoteCache`` object Inductor uses for the graph
  (``FxGraphCache.get_remote_cache()``: ``RemoteFxGraphCache`` on Redis), under the key
  ``<key>.iso-manifest`` (in Redis ``pt2:fx-graph-v1::<key>.iso-manifest:c1``).

Both hold the sealed envelope of manifest.py (format, version, sha256, manifest). Every
call here returns instead of raising: a manifest never breaks a compile.

For a fleet (many ranks, one Redis): :meth:`ManifestStore.wait_for` polls for a graph's
manifest; a manifest appears only after its graph was written, so "manifest present"
means "graph written and its checks recorded".
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from .manifest import CorruptedManifestError, unseal

log = logging.getLogger("inductor_sm_override")

SUFFIX = ".iso-manifest"
LOCAL = "local"
REMOTE = "remote"


@dataclasses.dataclass(frozen=True)
class Loaded:
    """One manifest read from one backend."""

    source: str  # "local" or "remote"
    status: str  # "ok", "missing", "corrupted", "unreadable"
    envelope: dict[str, Any] | None = None
    manifest: dict[str, Any] | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class ManifestStore:
    """Reads and writes graph manifests in the local cache dir and the remote cache."""

    @staticmethod
    def local_dir(key: str) -> str:
        from torch._inductor.codecache import FxGraphCache

        return os.path.join(FxGraphCache._get_tmp_dir(), key[1:3])

    @classmethod
    def local_path(cls, key: str, sha256: str) -> str:
        return os.path.join(cls.local_dir(key), f"{key}.{sha256[:16]}{SUFFIX}.json")

    def local_manifests(self, key: str) -> list[Loaded]:
        """Every local manifest of graph ``key`` (one per stored entry)."""
        try:
            names = sorted(os.listdir(self.local_dir(key)))
        except OSError:
            return []
        ending = SUFFIX + ".json"
        return [self._read_path(os.path.join(self.local_dir(key), name)) for name in names
                if name.startswith(key + ".") and name.endswith(ending)]

    @staticmethod
    def remote_key(key: str) -> str:
        return key + SUFFIX

    @staticmethod
    def remote_cache() -> Any:
        """Inductor's remote FX-graph cache when it is switched on here (else None)."""
        try:
            from torch._inductor.codecache import FxGraphCache
            from torch._inductor.utils import should_use_remote_fx_graph_cache

            if not should_use_remote_fx_graph_cache():
                return None
            return FxGraphCache.get_remote_cache()
        except Exception:
            log.debug("no remote FX graph cache", exc_info=True)
            return None

    def write(self, key: str, envelope: dict[str, Any], *, local: bool,
              remote_cache: Any) -> dict[str, str]:
        """Store ``envelope`` next to graph ``key``; returns backend -> "written" or the
        error text."""
        done: dict[str, str] = {}
        if local:
            try:
                from torch._inductor.codecache import write_atomic

                write_atomic(self.local_path(key, envelope["sha256"]), json.dumps(envelope),
                             make_dirs=True)
                done[LOCAL] = "written"
            except Exception as exc:
                done[LOCAL] = f"{type(exc).__name__}: {exc}"[:200]
        if remote_cache is not None:
            try:
                remote_cache.put(self.remote_key(key), envelope)
                done[REMOTE] = "written"
            except Exception as exc:
                done[REMOTE] = f"{type(exc).__name__}: {exc}"[:200]
        for listener in list(written_listeners):
            try:
                listener(key, envelope, dict(done))
            except Exception:
                log.debug("manifest listener failed", exc_info=True)
        return done

    def read_local(self, key: str, sha256: str) -> Loaded:
        """The local manifest of the entry of graph ``key`` whose manifest has ``sha256``."""
        return self._read_path(self.local_path(key, sha256))

    @staticmethod
    def _read_path(path: str) -> Loaded:
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:
            return Loaded(LOCAL, "missing")
        except Exception as exc:
            return Loaded(LOCAL, "unreadable", reason=f"{type(exc).__name__}: {exc}"[:200])
        return _loaded(LOCAL, raw)

    def read_remote(self, key: str, remote_cache: Any) -> Loaded:
        if remote_cache is None:
            return Loaded(REMOTE, "missing", reason="no remote cache")
        try:
            value = remote_cache.get(self.remote_key(key))
        except Exception as exc:  # torch's JSON serde raises on a value that is not JSON
            return Loaded(REMOTE, "corrupted", reason=f"{type(exc).__name__}: {exc}"[:200])
        if value is None:
            return Loaded(REMOTE, "missing")
        return _loaded(REMOTE, value)

    def wait_for(self, key: str, timeout_s: float, *, remote_cache: Any = None,
                 poll_s: float = 0.2) -> Loaded | None:
        """Poll until graph ``key`` has a manifest (in ``remote_cache`` if given, else
        locally) or ``timeout_s`` passed; returns it, or the last read (None: none local)."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            if remote_cache is not None:
                found: Loaded | None = self.read_remote(key, remote_cache)
                present = found.status != "missing"
            else:
                local = self.local_manifests(key)
                found = local[-1] if local else None
                present = found is not None
            if present or time.monotonic() >= deadline:
                return found
            time.sleep(poll_s)


def _loaded(source: str, raw: Any) -> Loaded:
    try:
        envelope = json.loads(raw) if isinstance(raw, (bytes, str)) else raw
        manifest = unseal(envelope)
    except (CorruptedManifestError, ValueError, UnicodeDecodeError) as exc:
        return Loaded(source, "corrupted", reason=str(exc)[:200])
    return Loaded(source, "ok", envelope, manifest)


STORE = ManifestStore()
# told (key, envelope, {backend: "written" or error}) after each write: a fleet leader can
# publish through torch's distributed store from here
written_listeners: list[Callable[[str, dict[str, Any], dict[str, str]], None]] = []
