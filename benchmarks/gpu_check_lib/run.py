"""One gpu-check run: its clock and time limit, the timed-part helper, its log, results and
files (each saved as soon as a part finishes)."""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import machine

from .cases import Sizes
from .report import goals, plot_speedups, summary_markdown


class Run:
    """One gpu-check run: its clock, sizes, results and files."""

    def __init__(self, args: argparse.Namespace, sizes: Sizes, device: str,
                 plan: list[dict[str, Any]]) -> None:
        self.args, self.sizes, self.device = args, sizes, device
        self.dry = args.dry_run
        self.limit_s = float(args.limit_s)
        self.started = time.perf_counter()
        self.out = Path(args.out)
        self.info = machine()
        if self.dry and not self.info["device"].startswith("CPU"):  # a GPU host's dry run
            self.info["device"] = f"CPU only ({self.info['cpu_count']} cores; GPU unused)"
        self.tag = file_tag(self.info, self.dry)
        self.lock = threading.RLock()
        self.factor = 1.0  # measured / estimated, from finished units (>= 0.5)
        self._spent: list[tuple[float, float]] = []  # (estimated, measured) per unit
        self.results: dict[str, Any] = {
            "check": "gpu_check", "dry_run": self.dry, "machine": self.info,
            "limit_s": self.limit_s, "argv": sys.argv[1:], "emulation": {},
            "plan": plan, "steps": {}, "rows": [], "autotune_cost": [],
            "training": [], "skipped": [], "goals": [],
        }
        self.out.mkdir(parents=True, exist_ok=True)
        self._log_handle = open(self.path(".log"), "a", buffering=1)  # noqa: SIM115
        self._decisions = open(self.path("-decisions.jsonl"), "a", buffering=1)  # noqa: SIM115

    def path(self, suffix: str) -> Path:
        return self.out / f"gpu_check-{self.tag}{suffix}"

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def log(self, text: str) -> None:
        line = f"[gpu-check {self.elapsed():6.1f} s] {text}"
        print(line, flush=True)
        with self.lock:
            self._log_handle.write(line + "\n")

    def log_raw(self, text: str) -> None:
        with self.lock:
            self._log_handle.write(text if text.endswith("\n") else text + "\n")

    def fits(self, estimate_s: float, what: str) -> bool:
        """Whether a unit of this estimate (scaled by what was measured so far) still fits;
        a unit that does not is skipped and recorded."""
        predicted = estimate_s * self.factor
        if self.elapsed() + predicted <= self.limit_s:
            return True
        note = (f"{what}: skipped at {self.elapsed():.0f} s (needs ~{predicted:.0f} s, "
                f"limit {self.limit_s:.0f} s)")
        self.results["skipped"].append(note)
        self.log("SKIP " + note)
        return False

    def part(self, estimate_s: float, what: str, work: Callable[..., dict[str, Any]],
             *args: Any) -> dict[str, Any] | None:
        """Run one timed unit, ``work(*args)``, if it still fits (else record the skip and
        return None): its result, or an ``error`` row when it raised (traceback to the
        log); what it took calibrates the later estimates."""
        if not self.fits(estimate_s, what):
            return None
        started = time.perf_counter()
        try:
            row = work(*args)
        except Exception as exc:
            row = {"error": f"{type(exc).__name__}: {exc}"[:400]}
            self.log_raw(traceback.format_exc())
        self.spent(estimate_s, time.perf_counter() - started)
        return row

    def spent(self, estimate_s: float, measured_s: float) -> None:
        """Calibrate later estimates on what the finished units really took."""
        self._spent.append((estimate_s, measured_s))
        est = sum(e for e, _ in self._spent)
        got = sum(m for _, m in self._spent)
        if est > 0:
            self.factor = max(0.5, min(4.0, got / est))

    def decisions(self, step: str, unit: str, mode: str, events: list[dict]) -> None:
        with self.lock:
            for event in events:
                self._decisions.write(json.dumps(
                    {"step": step, "unit": unit, "mode": mode, **event}, default=str) + "\n")

    def save(self, plot: bool = False) -> None:
        """Write the JSON, CSV and summary (and the plot) as they stand now."""
        with self.lock:
            self.results["elapsed_s"] = round(self.elapsed(), 1)
            self.results["measured_vs_estimated"] = round(self.factor, 2)
            self.results["goals"] = goals(self.results)
            _write_atomic(self.path(".json"),
                          json.dumps(self.results, indent=2, default=str) + "\n")
            _write_csv(self.path(".csv"), self.results["rows"])
            _write_atomic(self.path(".md"), summary_markdown(self.results, self.tag))
            if plot:
                try:
                    plot_speedups(self.results["rows"], self.path(".png"))
                except Exception as exc:  # matplotlib missing or broken: a note, not a crash
                    self.log(f"(no plot: {type(exc).__name__}: {exc})")

    def close(self) -> None:
        with self.lock:
            self._log_handle.close()
            self._decisions.close()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    fields = ["case", "kind", "mode", "ms", "speedup_vs_gated", "compile_s", "autotune_s",
              "rel_err_fp64", "winner", "template_wins", "ops", "code_templates",
              "code_externs", "used", "fx_cache_hits", "spread", "sms", "sms_limited", "error"]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def file_tag(info: dict[str, Any], dry: bool) -> str:
    """<device>-torch<v>-triton<v>-<date>-<HHMM>Z, in the letters the device tool returns."""
    device = "cpu" if info["device"].startswith("CPU") else info["device"].split(" (")[0]
    now = _dt.datetime.now(_dt.timezone.utc)
    tag = (f"{'dryrun-' if dry else ''}{device}-torch{str(info['torch']).split('+')[0]}-"
           f"triton{info['triton']}-{now:%Y-%m-%d-%H%M}Z")
    return re.sub(r"[^A-Za-z0-9._-]", "_", tag)


