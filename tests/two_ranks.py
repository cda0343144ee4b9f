"""Run a probe script as 2 (or more) ranks under ``torch.distributed.run`` (CPU, gloo) and read the
``rank<r>.json`` each rank writes into ``out_dir``. A launcher that runs past its timeout is
killed with its ranks (torchrun starts each rank in a session of its own, so killing the
launcher's process group is not enough: every process below the launcher goes),
and the test fails with the output's tail instead of hanging on the ranks' open pipe."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path


def _descendants(root: int) -> list[int]:
    """Every live process below ``root`` (children, grandchildren...), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def run_two_ranks(probe: Path, out_dir: Path, *args: str, env: dict[str, str],
                  timeout_s: float, ranks: int = 2) -> list[dict]:
    """``torchrun --standalone --nproc_per_node=<ranks> probe out_dir *args``; each rank's
    JSON."""
    run = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={ranks}", str(probe), str(out_dir), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        output, _ = run.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        below = _descendants(run.pid)  # the ranks, in sessions of their own
        for pid in [run.pid, *below]:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        output, _ = run.communicate(timeout=60)
        raise AssertionError(f"{ranks} ranks ran past {timeout_s} s (killed: {below}):\n"
                             f"{output[-4000:]}") from None
    assert run.returncode == 0, output[-4000:]
    return [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(ranks)]
