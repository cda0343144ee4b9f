"""Step 1: ``pytest -m gpu`` in a subprocess (junit XML into OUT), capped in time."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cases import ROOT

if TYPE_CHECKING:
    from .run import Run


def step_pytest(run: Run) -> None:
    xml = run.path("-pytest.xml")
    cap = min(run.sizes.pytest_cap_s, max(10.0, run.limit_s - run.elapsed()))
    cache = tempfile.mkdtemp(prefix="gpu-check-pytest-")
    env = {**os.environ, "PYTHONPATH": _pythonpath(), "TORCHINDUCTOR_CACHE_DIR": cache,
           "PYTHONUNBUFFERED": "1"}
    if run.dry:  # the same code on the CPU, also on a GPU host: the gpu tests are skipped
        env["CUDA_VISIBLE_DEVICES"] = ""
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rfEs", "-p", "no:cacheprovider",
           "--continue-on-collection-errors", f"--junitxml={xml}", "-o", "timeout=150",
           *run.sizes.pytest_paths]
    run.log(f"step 1: {' '.join(cmd[2:])} (cap {cap:.0f} s)")
    started = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=cap)
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        output = (_text(exc.stdout) + _text(exc.stderr) + f"\n(killed after {cap:.0f} s)")
        code = None
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    run.log_raw("---- pytest output ----\n" + output + "\n---- end of pytest output ----")
    result = {"exit_code": code, "seconds": round(time.perf_counter() - started, 1),
              "timed_out": code is None, **junit_counts(xml),
              "tail": output.strip().splitlines()[-12:]}
    run.results["pytest"] = result
    run.log(f"step 1: pytest exit {code}: {result.get('tests', 0)} tests, "
            f"{result.get('failures', 0)} failed, {result.get('errors', 0)} errors, "
            f"{result.get('skipped', 0)} skipped ({result['seconds']} s)")


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _pythonpath() -> str:
    parts = [str(ROOT), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    return os.pathsep.join(dict.fromkeys(parts))


def junit_counts(xml: Path) -> dict[str, Any]:
    """tests/failures/errors/skipped and the failing tests' names, from a junit XML."""
    if not xml.exists():
        return {"junit": False}
    root = ET.parse(xml).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites)
              for k in ("tests", "failures", "errors", "skipped")}
    failed = []
    for case in root.iter("testcase"):
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if bad is not None:
            message = (bad.get("message") or "").splitlines()
            failed.append(f"{case.get('classname')}::{case.get('name')}: "
                          f"{message[0][:200] if message else ''}")
    return {"junit": True, **counts, "failed": failed}


