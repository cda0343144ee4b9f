"""A real ``redis-server`` for the tests: 127.0.0.1, a free port, no persistence, its own
directory, stopped by its pid. No mock: Inductor's ``RedisRemoteCacheBackend`` talks to it.

``make redis`` (run by ``make test``) installs Debian's ``redis-server`` where it can (root
and apt-get); where it cannot, the tests that need a server are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

INSTALL_HINT = ("`make redis` installs Debian's redis-server (needs root and apt-get); "
                "the Python client is in the dev extra (`pip install -e '.[dev]'`)")


def missing() -> str | None:
    """Why no server can be started here (None: it can)."""
    if shutil.which("redis-server") is None:
        return f"redis-server is not installed: {INSTALL_HINT}"
    try:
        import redis  # noqa: F401
    except ImportError:
        return f"the redis Python client is not installed: {INSTALL_HINT}"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """One ``redis-server`` process; ``env`` points Inductor's remote caches at it."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="iso-redis-"))
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def start(self, attempts: int = 3) -> RedisServer:
        error = ""
        for _ in range(attempts):  # a port taken between probing and binding: try another
            self.port = _free_port()
            log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 - owned by the process
            self.process = subprocess.Popen(
                ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
                 "--save", "", "--appendonly", "no", "--dir", str(self.dir),
                 "--protected-mode", "yes", "--daemonize", "no"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            log.close()
            if self._wait_ready():
                return self
            error = (self.dir / "redis.log").read_text(errors="replace")[-500:]
            self._kill()
        shutil.rmtree(self.dir, ignore_errors=True)
        raise RuntimeError(f"redis-server did not start: {error}")

    def _wait_ready(self, timeout_s: float = 10.0) -> bool:
        import redis

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                if redis.Redis(host="127.0.0.1", port=self.port).ping():
                    return True
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        return False

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port)

    def flush(self) -> None:
        self.client().flushall()

    @property
    def env(self) -> dict[str, str]:
        """Variables that send Inductor's FX-graph and AOT-autograd caches to this server."""
        return {"TORCHINDUCTOR_REDIS_HOST": "127.0.0.1",
                "TORCHINDUCTOR_REDIS_PORT": str(self.port),
                "TORCHINDUCTOR_FX_GRAPH_REMOTE_CACHE": "1",
                "TORCHINDUCTOR_AUTOGRAD_REMOTE_CACHE": "1"}

    def stop(self) -> None:
        """Stop the server by its pid (TERM, then KILL), and remove its directory."""
        self._kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _kill(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
