"""Interpreter start-up cost of the .pth hook: installed vs not, variable unset vs set.

    python benchmarks/startup.py [--runs 40]

Builds the wheel, makes two throw-away venvs (one with the package, one without; neither
has torch), and times ``python -c pass`` in each, interleaved, with INDUCTOR_SM_OVERRIDE
unset and set. Goals: unset <= 1.02x, set <= 1.05x, torch never imported at start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, write_result

REPO = Path(__file__).resolve().parents[1]


def _venv(root: Path, name: str, wheel: Path | None) -> str:
    subprocess.run([sys.executable, "-m", "venv", str(root / name)], check=True)
    python = str(root / name / "bin" / "python")
    if wheel is not None:
        subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
                       check=True, capture_output=True)
    return python


def _time(python: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([python, "-c", "pass"], env=env, check=True)
    return (time.perf_counter() - start) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if not k.startswith("INDUCTOR_SM_OVERRIDE")}
    envs = {"unset": base, "set": {**base, "INDUCTOR_SM_OVERRIDE": "1",
                                   "INDUCTOR_SM_OVERRIDE_MIN_SMS": "40"}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                        "--no-build-isolation", "-w", str(root / "dist"), str(REPO)],
                       check=True, capture_output=True)
        wheel = next((root / "dist").glob("*.whl"))
        pythons = {"without": _venv(root, "without", None), "with": _venv(root, "with", wheel)}
        probe = "import sys; print('torch' in sys.modules, 'wrapt' in sys.modules)"
        loaded = subprocess.run([pythons["with"], "-c", probe], env=envs["set"],
                                capture_output=True, text=True).stdout.split()
        samples: dict[str, list[float]] = {f"{p}/{e}": [] for p in pythons for e in envs}
        for name in samples:  # warm the file cache
            _time(pythons[name.split("/")[0]], envs[name.split("/")[1]])
        for _ in range(args.runs):
            for name in samples:
                python, env = name.split("/")
                samples[name].append(_time(pythons[python], envs[env]))
    med = {name: statistics.median(v) for name, v in samples.items()}
    result = {
        "median_ms": {k: round(v, 3) for k, v in med.items()},
        "ratio_unset": med["with/unset"] / med["without/unset"],
        "ratio_set": med["with/set"] / med["without/set"],
        "torch_imported_at_start": loaded[0] == "True",
        "wrapt_imported_at_start": loaded[1] == "True",
        "runs": args.runs,
    }
    for name, value in med.items():
        print(f"{name:14s} {value:7.2f} ms")
    print(f"unset: {result['ratio_unset']:.3f}x (goal <= 1.02)   "
          f"set: {result['ratio_set']:.3f}x (goal <= 1.05)   "
          f"torch imported at start: {result['torch_imported_at_start']}, "
          f"wrapt: {result['wrapt_imported_at_start']}")
    if not args.no_write:
        print("wrote", write_result("startup", {"benchmark": "startup", "machine": machine(),
                                                **result}))
    else:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
