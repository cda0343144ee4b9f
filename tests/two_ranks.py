"""Run a probe script as 2 ranks under ``torch.distributed.run`` (CPU, gloo) and read the
``rank<r>.json`` each rank writes into ``out_dir``. A launcher that runs past its timeout is
killed with both ranks (its own session), and the test fails with the output's tail."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path


def run_two_ranks(probe: Path, out_dir: Path, *args: str, env: dict[str, str],
                  timeout_s: float) -> list[dict]:
    """``torchrun --standalone --nproc_per_node=2 probe out_dir *args``; both ranks' JSON."""
    run = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(probe), str(out_dir), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        output, _ = run.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)  # the launcher and both ranks
        output, _ = run.communicate()
    assert run.returncode == 0, output[-4000:]
    return [json.loads((out_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
