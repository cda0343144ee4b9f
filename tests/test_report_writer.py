"""ReportWriter survives its descriptor being closed or reused (torch 2.9.1 closes fd 0)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from inductor_sm_override.core.events import ReportWriter
from inductor_sm_override.core.settings import Settings


def _events(path) -> list[str]:
    return [json.loads(line)["event"] for line in open(path).read().splitlines()]


def test_writer_never_holds_a_low_fd_and_survives_fd0_being_closed(tmp_path):
    """With stdin closed, os.open returns 0; torch 2.9.1 later closes fd 0 in-process and the
    next open() reuses it. Before the fix the report's lines went into that other file."""
    script = textwrap.dedent(f"""
        import json, os
        from inductor_sm_override.core.events import ReportWriter
        from inductor_sm_override.core.settings import Settings
        try:
            os.close(0)  # stdin closed: the next open() gets fd 0
        except OSError:
            pass  # already closed (a parent that ran torch 2.9.1 passes none)
        writer = ReportWriter({str(tmp_path / "r.jsonl")!r}, Settings())
        held = writer._fd
        try:
            os.close(0)  # what torch 2.9.1 does after loading a compiled kernel
        except OSError:
            pass
        other = os.open({str(tmp_path / "other.txt")!r}, os.O_WRONLY | os.O_CREAT)
        writer.write({{"event": "autotune", "name": "mm"}})
        print(json.dumps({{"held": held, "other": other}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=120)
    assert out.returncode == 0, out.stderr
    fds = json.loads(out.stdout.strip().splitlines()[-1])
    assert fds["held"] >= 3 and fds["other"] == 0
    assert _events(tmp_path / "r.jsonl") == ["start", "autotune"]
    assert (tmp_path / "other.txt").read_text() == ""


def test_writer_reopens_when_its_fd_is_closed_or_reused(tmp_path):
    path = tmp_path / "r.jsonl"
    writer = ReportWriter(str(path), Settings())
    os.close(writer._fd)  # closed under us: EBADF
    writer.write({"event": "autotune", "name": "a"})
    stolen = writer._fd
    other = tmp_path / "other.txt"
    opened = os.open(other, os.O_WRONLY | os.O_CREAT)
    os.dup2(opened, stolen)  # someone else's file now holds our descriptor number
    try:
        writer.write({"event": "autotune", "name": "b"})
    finally:
        os.close(stolen)
        os.close(opened)
        writer.close()
    assert _events(path) == ["start", "autotune", "autotune"]
    assert other.read_text() == ""
