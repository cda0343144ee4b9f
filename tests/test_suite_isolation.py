"""The suite's own set-up: every session compiles in a fresh Inductor cache of its own,
even when the user exported ``TORCHINDUCTOR_CACHE_DIR`` (a cached graph or autotune result
from an earlier run would skip the autotuning the tests observe)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PROBE = "ISO_CACHE_PROBE"


def test_probe_inductor_cache_dir():
    """Run by the test below in a child pytest: reports the cache directory it got."""
    out = os.environ.get(PROBE)
    if not out:
        pytest.skip("only run as the child of the test below")
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    Path(out).write_text(json.dumps({"env": os.environ["TORCHINDUCTOR_CACHE_DIR"],
                                     "inductor": cache_dir()}))


def test_sessions_use_their_own_cache_even_when_one_is_exported(tmp_path):
    user = tmp_path / "user-cache"
    report = tmp_path / "probe.json"
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(user), PROBE: str(report)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"{Path(__file__).name}::test_probe_inductor_cache_dir"],
        cwd=Path(__file__).parent, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    seen = json.loads(report.read_text())
    assert seen["inductor"] == seen["env"]  # what Inductor really uses
    assert Path(seen["env"]).name.startswith("iso-inductor-")
    assert not Path(seen["env"]).is_relative_to(user)
    assert not user.exists()  # nothing was written into the user's cache


def test_this_session_has_a_fresh_cache():
    assert Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]).name.startswith("iso-inductor-")
