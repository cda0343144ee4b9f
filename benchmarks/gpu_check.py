"""`make gpu-check`: one prepared GPU acceptance run that fits in six minutes.

    PYTHONPATH=$PWD python3 benchmarks/gpu_check.py [--out DIR] [--limit-s 360]
        [--plan] [--dry-run] [--steps pytest,emulation,autotune,training]

Runs from the source tree (no venv, no pip) with what the GPU machines have (python3,
torch, triton, pytest, matplotlib). Steps, in order of value, each saved as soon as it
finishes (and step 2 after every case):

1. ``pytest -m gpu`` (junit XML into OUT);
2. 46-SM emulation: ``iso.limit_sms(46)`` (rounded to the architecture's granularity: 48
   on Hopper) for timings + ``simulate_sms`` of the same count for decisions; fp16 GEMMs and
   transformer blocks; modes gated / forced+verify / cap8+verify / fastest;
3. autotune cost: one GEMM, EXHAUSTIVE capped by ``budget_s`` vs ``max_choices=8``
   (verify on and off: the verify overhead);
4. a training step of the MLP block under the override (backward GEMM decisions).

Every file goes to OUT (default benchmarks/results/) as
``gpu_check-<device>-torch<v>-triton<v>-<date>-<HHMM>Z.<ext>``: .json (everything), .csv
(step 2 rows), .png (speed-ups), .md (summary with the GPU goals), .log, -pytest.xml,
-decisions.jsonl: 7 files (the device tool returns at most 8). The run stops itself
before ``--limit-s``, skipping what no longer fits (and saying so); a watchdog ends the
process at ``--limit-s`` + 60 s whatever happens. ``--plan`` prints each step's estimate;
``--dry-run`` runs the same code on the CPU with tiny sizes (CI).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import dataclasses
import datetime as _dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import RESULTS, machine, median_ms

ROOT = Path(__file__).resolve().parents[1]
MODE = "max-autotune-no-cudagraphs"
EMULATED_SMS = 46  # an RTX 4070-class part; limit_sms rounds it (48 on sm_90)
GATE_SMS = 68  # torch's own bar: "gated" is the gate saying no, as on a mid-size GPU
MODES = ["gated", "forced+verify", "cap8+verify", "fastest"]
HARD_STOP_GRACE_S = 60.0


# --- the work, with estimates ---------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Case:
    """One step-2 case: a GEMM (m, n, k) or a transformer block (kind, tokens, width, x)."""

    key: str
    label: str
    kind: str  # "gemm", "mlp" or "attn"
    dims: tuple[int, int, int]  # gemm: m, n, k; mlp: tokens, d, hidden; attn: tokens, d, heads
    estimate_s: dict[str, float]  # mode -> seconds (compile + timing), target device

    @property
    def is_model(self) -> bool:
        return self.kind != "gemm"


def _est(gated: float, forced: float, cap8: float, fastest: float) -> dict[str, float]:
    return dict(zip(MODES, (gated, forced, cap8, fastest), strict=True))


# H100 estimates at 48 SMs, torch 2.11 (see benchmarks/results/README.md, "gpu-check
# estimates"): DESIGN.md measured 0.8-22 s per forced GEMM and 8-46 s per forced MLP block
# (M=16..4096) vs 0.05 s / 0.08-1.4 s gated, on the full H100; a cap of 8 of ~20 configs
# costs ~0.4x plus a second; "fastest" re-uses the gated and cap8 graphs (FX-graph-cache
# hits) and adds its A/B timing; every mode adds ~0.7 s of timing and fp64 check.
GPU_CASES = [
    Case("decode", "decode 16x4096x4096", "gemm", (16, 4096, 4096), _est(2, 6, 3.5, 3)),
    Case("skinny", "skinny 32x8192x8192", "gemm", (32, 8192, 8192), _est(2, 7, 4, 3)),
    Case("prefill", "prefill 2048x4096x4096", "gemm", (2048, 4096, 4096), _est(2, 13, 6.5, 3)),
    Case("mlp256", "MLP block M=256 (4096/11008)", "mlp", (256, 4096, 11008),
         _est(3, 15, 7, 4)),
    Case("attn256", "attention block M=256 (4096, 32 heads)", "attn", (256, 4096, 32),
         _est(3, 15, 7, 4)),
    Case("mlp2048", "MLP block M=2048 (4096/11008)", "mlp", (2048, 4096, 11008),
         _est(3, 25, 11, 4)),
    Case("attn2048", "attention block M=2048 (4096, 32 heads)", "attn", (2048, 4096, 32),
         _est(3, 25, 11, 4)),
]
DRY_CASES = [  # the same code on the CPU: C++ GEMM template vs MKL under freezing
    Case("decode", "gemm 8x32x64", "gemm", (8, 32, 64), _est(2, 2, 2, 3)),
    Case("attn", "attention block M=8 (32, 2 heads)", "attn", (8, 32, 2), _est(3, 3, 3, 4)),
]


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What a run does at its size (GPU or dry run) and what each part should cost."""

    dtype: str
    cases: list[Case]
    startup_s: float
    pytest_s: float  # estimate
    pytest_cap_s: float  # hard cap of the pytest subprocess
    pytest_paths: tuple[str, ...]
    cost_gemm: tuple[int, int, int]
    cost_budget_s: float
    cost_estimate_s: dict[str, float]
    train_dims: tuple[int, int, int]
    train_estimate_s: dict[str, float]
    bench_rep_ms: int
    model_gemm_backends: str | None = None  # dry run: ATen only in blocks (no C++ templates)


GPU = Sizes(
    dtype="float16", cases=GPU_CASES, startup_s=15, pytest_s=65, pytest_cap_s=100,
    pytest_paths=("tests",),
    # the earlier H100 run's EXHAUSTIVE GEMM (over 320 s uncapped on the full GPU)
    cost_gemm=(1024, 14336, 4096), cost_budget_s=25.0,
    cost_estimate_s={"gated": 2, "exhaustive+budget": 31, "exhaustive cap8+verify": 7,
                     "exhaustive cap8 no-verify": 7},
    train_dims=(256, 4096, 11008), train_estimate_s={"gated": 7, "cap8+verify": 22},
    bench_rep_ms=60,
)
DRY = Sizes(
    dtype="float32", cases=DRY_CASES, startup_s=6, pytest_s=10, pytest_cap_s=120,
    pytest_paths=("tests/test_gpu.py", "tests/test_limit_sms.py"),
    cost_gemm=(8, 32, 64), cost_budget_s=5.0,
    cost_estimate_s={"gated": 2, "exhaustive+budget": 2, "exhaustive cap8+verify": 2,
                     "exhaustive cap8 no-verify": 2},
    train_dims=(8, 32, 64), train_estimate_s={"gated": 3, "cap8+verify": 3},
    bench_rep_ms=0, model_gemm_backends="ATEN",
)


@dataclasses.dataclass(frozen=True)
class Step:
    key: str
    title: str
    run: Callable[[Run], None]
    estimate: Callable[[Sizes], float]


# --- the run: clock, log, results, saves -----------------------------------------------------

class Run:
    """One gpu-check run: its clock, sizes, results and files."""

    def __init__(self, args: argparse.Namespace, sizes: Sizes, device: str) -> None:
        self.args, self.sizes, self.device = args, sizes, device
        self.dry = args.dry_run
        self.limit_s = float(args.limit_s)
        self.started = time.perf_counter()
        self.out = Path(args.out)
        self.info = machine()
        self.tag = file_tag(self.info, self.dry)
        self.lock = threading.RLock()
        self.factor = 1.0  # measured / estimated, from finished units (>= 0.5)
        self._spent: list[tuple[float, float]] = []  # (estimated, measured) per unit
        self.results: dict[str, Any] = {
            "check": "gpu_check", "dry_run": self.dry, "machine": self.info,
            "limit_s": self.limit_s, "argv": sys.argv[1:], "emulation": {},
            "plan": plan_rows(sizes), "steps": {}, "rows": [], "autotune_cost": [],
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


# --- shared helpers: models, timing, errors, kernels -----------------------------------------

def build_case(case: Case, device: str, dtype: Any) -> tuple[Any, tuple]:
    """(model in eval mode, inputs) for a case."""
    import torch

    torch.manual_seed(0)
    if case.kind == "gemm":
        m, n, k = case.dims
        model: Any = torch.nn.Linear(k, n, bias=False)
        x = torch.randn(m, k)
    elif case.kind == "mlp":
        tokens, d, hidden = case.dims
        model, x = MLPBlock(d, hidden), torch.randn(tokens, d)
    else:
        tokens, d, heads = case.dims
        model, x = AttentionBlock(d, heads), torch.randn(tokens, d)
    return model.to(device=device, dtype=dtype).eval(), (x.to(device=device, dtype=dtype),)


def _modules() -> tuple[type, type]:
    import torch
    import torch.nn.functional as F  # noqa: N812

    class MLPBlockImpl(torch.nn.Module):
        """Pre-norm transformer MLP: x + down(gelu(up(norm(x))))."""

        def __init__(self, d: int, hidden: int) -> None:
            super().__init__()
            self.norm = torch.nn.LayerNorm(d)
            self.up, self.down = torch.nn.Linear(d, hidden), torch.nn.Linear(hidden, d)

        def forward(self, x: Any) -> Any:
            return x + self.down(F.gelu(self.up(self.norm(x))))

    class AttentionBlockImpl(torch.nn.Module):
        """Pre-norm causal self-attention: QKV projection, SDPA, output projection."""

        def __init__(self, d: int, heads: int) -> None:
            super().__init__()
            self.heads = heads
            self.norm = torch.nn.LayerNorm(d)
            self.qkv, self.out = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)

        def forward(self, x: Any) -> Any:
            tokens, d = x.shape
            qkv = self.qkv(self.norm(x)).view(tokens, 3, self.heads, d // self.heads)
            q, k, v = qkv.permute(1, 2, 0, 3).unbind(0)  # each (heads, tokens, head_dim)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return x + self.out(y.transpose(0, 1).reshape(tokens, d))

    return MLPBlockImpl, AttentionBlockImpl


def MLPBlock(d: int, hidden: int) -> Any:  # noqa: N802 - a class factory (torch imported late)
    return _modules()[0](d, hidden)


def AttentionBlock(d: int, heads: int) -> Any:  # noqa: N802
    return _modules()[1](d, heads)


def gpu_time_ms(fn: Callable[[], Any], device: str, rep_ms: int) -> tuple[float, float]:
    """(median ms, relative spread of two independent medians). On CUDA: triton's do_bench
    (CUDA events, L2 flushed between runs), twice; on the CPU: synchronised wall time."""
    if device == "cuda":
        from triton.testing import do_bench

        a, b = (do_bench(fn, warmup=10, rep=rep_ms, return_mode="median") for _ in range(2))
    else:
        a, b = (median_ms(fn, repeat=7) for _ in range(2))
    return (a + b) / 2, abs(a - b) / max(min(a, b), 1e-9)


def fp64_reference(model: Any, inputs: tuple) -> Any:
    import torch

    with torch.no_grad():
        return copy.deepcopy(model).double()(*(t.double() for t in inputs))


def rel_error(out: Any, ref: Any) -> float:
    diff = (out.double() - ref).abs().max()
    return float(diff / ref.abs().max().clamp_min(1e-12))


def kernels_in_code(codes: list[str]) -> tuple[list[str], list[str]]:
    """(template kernels, extern GEMM calls) in Inductor's generated code: Triton templates
    are ``triton_tem_*``, CPU ones are C++ kernels built on ``micro_gemm``."""
    templates, externs = set(), set()
    for code in codes:
        for chunk in re.split(r"\n(?=\w+ = async_compile\.)", code):
            name = re.match(r"(\w+) = async_compile\.", chunk)
            if name and (name.group(1).startswith("triton_tem_") or "micro_gemm" in chunk):
                templates.add(name.group(1))
        externs.update(re.findall(r"extern_kernels\.(\w+)\(", code))
        externs.update(re.findall(r"torch\.ops\.mkl\.(\w+)", code))
    return sorted(templates), sorted(externs)


def summarize_events(events: list[dict[str, Any]]) -> dict[str, Any]:
    """What the decisions say: ops, template wins, winners, autotune seconds."""
    winners = [e.get("winner") for e in events]
    wins = sum(1 for e in events if e.get("winner") and e["winner"] not in e.get("externs", ()))
    return {
        "ops": len(events),
        "template_wins": wins,
        "winner": " + ".join(str(w) for w in winners) if winners else "",
        "autotune_s": round(sum(e.get("seconds") or 0.0 for e in events), 3),
        "offered": sum(len(e.get("offered", ())) for e in events),
        "benchmarked": sum(1 for e in events for t in e.get("timings", {}).values()
                           if t is not None),
        "rejected": sum(len(e.get("rejected", ())) for e in events),
        "capped": sum(len(e.get("capped", ())) for e in events),
        "budget_dropped": sum(len(e.get("budget_dropped", ())) for e in events),
        "sms_seen": sorted({e.get("sms") for e in events if e.get("sms") is not None}),
    }


@contextlib.contextmanager
def cold_cache(run: Run) -> Any:
    """A fresh Inductor/Triton cache (on disk and in memory): every mode compiles cold, so
    one mode's kernels never make another's autotuning look cheap. Not in a dry run: there
    the C++ kernels' compile would dominate, and the CPU's figures mean nothing anyway."""
    import torch

    torch._dynamo.reset()
    if run.dry:
        yield
        return
    try:
        from torch._inductor.utils import fresh_cache
    except ImportError:
        yield
        return
    with fresh_cache():
        yield


class Emulation:
    """limit_sms(46) (rounded) + the simulate_sms of the same count; on the CPU: neither."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.sms = EMULATED_SMS
        self.limited = False
        self.note = ""

    def probe(self) -> None:
        """Enter and leave limit_sms once to learn the rounded count (or why it fails)."""

        if self.run.device != "cuda":
            self.note = "CPU dry run: no SM limit, no simulation"
        else:
            self._enter_once()
        self.run.results["emulation"] = {"requested": EMULATED_SMS, "sms": self.sms,
                                         "limited": self.limited, "note": self.note}
        self.run.log("emulation: " + self.note)

    def _enter_once(self) -> None:
        import inductor_sm_override as iso

        try:
            with warnings.catch_warnings(record=True), iso.limit_sms(EMULATED_SMS) as lim:
                self.sms = int(lim.sms or EMULATED_SMS)
            self.limited = True
            self.note = f"limit_sms({EMULATED_SMS}) -> {self.sms} SMs of {lim.total}"
        except Exception as exc:
            self.note = (f"limit_sms failed ({type(exc).__name__}: {exc}); timings are "
                         "FULL-GPU, decisions still simulate 46 SMs")

    def limit(self) -> Any:
        import inductor_sm_override as iso

        if not self.limited:
            return contextlib.nullcontext()
        return iso.limit_sms(EMULATED_SMS)

    def settings(self, **extra: Any) -> dict[str, Any]:
        sim = {"simulate_sms": self.sms} if self.run.device == "cuda" else {}
        return {**sim, **extra}


def _inductor_patches(run: Run, fx_graph_cache: bool, model: bool = False) -> dict[str, Any]:
    patches = {"fx_graph_cache": fx_graph_cache, "autotune_local_cache": False,
               "freezing": run.device == "cpu"}
    if model and run.sizes.model_gemm_backends:
        patches["max_autotune_gemm_backends"] = run.sizes.model_gemm_backends
    return patches


# --- step 1: pytest -m gpu -------------------------------------------------------------------

def step_pytest(run: Run) -> None:
    xml = run.path("-pytest.xml")
    cap = min(run.sizes.pytest_cap_s, max(10.0, run.limit_s - run.elapsed()))
    cache = tempfile.mkdtemp(prefix="gpu-check-pytest-")
    env = {**os.environ, "PYTHONPATH": _pythonpath(), "TORCHINDUCTOR_CACHE_DIR": cache,
           "PYTHONUNBUFFERED": "1"}
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


# --- step 2: 46-SM emulation -----------------------------------------------------------------

def step_emulation(run: Run) -> None:
    import torch

    import inductor_sm_override as iso

    emulation = Emulation(run)
    emulation.probe()
    dtype = getattr(torch, run.sizes.dtype)
    cases = [c for c in run.sizes.cases if not run.args.cases or c.key in run.args.cases]
    for index, case in enumerate(cases):
        if not run.fits(min(case.estimate_s.values()) + case.estimate_s["forced+verify"],
                        f"step 2 case {case.label} (and {len(cases) - index - 1} after it)"):
            run.results["skipped"].extend(f"step 2 case {c.label}" for c in cases[index + 1:])
            break
        model, inputs = build_case(case, run.device, dtype)
        ref = fp64_reference(model, inputs)
        rows: dict[str, dict[str, Any]] = {}
        # forced first in its own cold cache; then gated, cap8 and fastest share one, so
        # "fastest" finds the gated and cap8 graphs in the FX graph cache (same settings)
        for group in (["forced+verify"], ["gated", "cap8+verify", "fastest"]):
            with cold_cache(run):
                for mode in group:
                    if not run.fits(case.estimate_s[mode], f"step 2 {case.label} {mode}"):
                        continue
                    started = time.perf_counter()
                    try:
                        row = emulation_mode(run, emulation, case, model, inputs, ref, mode)
                    except Exception as exc:
                        row = {"error": f"{type(exc).__name__}: {exc}"[:400]}
                        run.log_raw(traceback.format_exc())
                    run.spent(case.estimate_s[mode], time.perf_counter() - started)
                    rows[mode] = {"case": case.label, "key": case.key, "kind": case.kind,
                                  "mode": mode, "sms": emulation.sms,
                                  "sms_limited": emulation.limited, **row}
        gated = rows.get("gated", {}).get("ms")
        for mode in MODES:
            if mode not in rows:
                continue
            row = rows[mode]
            if gated and row.get("ms"):
                row["speedup_vs_gated"] = round(gated / row["ms"], 4)
                row["noise"] = round(max(0.02, rows["gated"].get("spread", 0)
                                         + row.get("spread", 0)), 4)
            run.results["rows"].append(row)
            run.log("step 2: " + row_line(row))
        del model, inputs, ref
        if run.device == "cuda":
            torch.cuda.empty_cache()
        run.save(plot=True)
    iso.clear_decisions()


def emulation_mode(run: Run, emulation: Emulation, case: Case, model: Any, inputs: tuple,
                   ref: Any, mode: str) -> dict[str, Any]:
    """Compile one case in one mode under the emulation; time it; check it against fp64."""
    import torch
    import torch._inductor.config as config
    from torch._inductor.utils import run_and_get_code

    import inductor_sm_override as iso

    # every mode starts from the 46-SM world (the gate says no); the override modes lift the
    # gate in a block nested inside it, as iso.compile's "override" stage does in "fastest"
    # (the same nesting gives the same FX-graph-cache salt: "fastest" re-uses cap8's graph)
    gated = emulation.settings(min_sms=GATE_SMS, verify=False)
    lift = {"forced+verify": emulation.settings(min_sms=0, verify=True),
            "cap8+verify": emulation.settings(min_sms=0, max_choices=8, verify=True)}
    iso.clear_decisions()
    torch._dynamo.reset()
    hits_before = _fx_cache_hits()
    result: dict[str, Any] = {}
    with warnings.catch_warnings(record=True) as caught, torch.no_grad(), \
            config.patch(_inductor_patches(run, True, case.is_model)), emulation.limit():
        started = time.perf_counter()
        if mode == "fastest":
            # iso.compile's "plain" stage is what the 46-SM part gets (the outer block)
            with iso.override(**gated):
                compiled = iso.compile(model, inputs, prefer="fastest",
                                       compile_kwargs={"dynamic": False},
                                       **lift["cap8+verify"])
            out = compiled(*inputs)
            fn: Any = compiled
            result["used"] = compiled.used
            result["checks"] = [_stage_check(c) for c in getattr(compiled, "checks", ())]
        else:
            fn = torch.compile(model, mode=MODE, dynamic=False)
            inner = iso.override(**lift[mode]) if mode in lift else contextlib.nullcontext()
            with iso.override(**gated), inner:
                out, codes = run_and_get_code(fn, *inputs)
            result["code_templates"], result["code_externs"] = (
                " ".join(k) for k in kernels_in_code(codes))
            result["used"] = mode
        result["compile_s"] = round(time.perf_counter() - started, 3)
        result["fx_cache_hits"] = _fx_cache_hits() - hits_before
        events = iso.decisions()
        frames_before = _frames_compiled()
        ms, spread = gpu_time_ms(lambda: fn(*inputs), run.device, run.sizes.bench_rep_ms)
        # timed outside the blocks: the compiled code must be what the block produced
        result["recompiled_while_timed"] = _frames_compiled() - frames_before
        if mode == "fastest" and callable(getattr(compiled, "release", None)):
            compiled.release()  # let the patches go now, not at garbage collection
    result.update(ms=round(ms, 5), spread=round(spread, 4), rel_err_fp64=rel_error(out, ref),
                  **summarize_events(events))
    result["warnings"] = sorted({str(w.message)[:160] for w in caught})[:5]
    run.decisions("emulation", case.key, mode, events)
    return result


def _fx_cache_hits() -> int:
    return _counter("inductor", "fxgraph_cache_hit")


def _frames_compiled() -> int:
    return _counter("frames", "ok")


def _counter(group: str, name: str) -> int:
    try:
        from torch._dynamo.utils import counters

        return int(counters[group][name])
    except Exception:
        return 0


def _stage_check(check: Any) -> dict[str, Any]:
    """The fields of one of iso.compile's stage checks that the summary needs."""
    fields = ("stage", "passed", "time_ms", "seconds", "reason")
    return {k: getattr(check, k, None) for k in fields}


def row_line(row: dict[str, Any]) -> str:
    head = f"{row['case']:40s} {row['mode']:14s}"
    if "ms" not in row:
        return f"{head} ERROR {row.get('error', '')}"
    speed = row.get("speedup_vs_gated")
    return (f"{head} {row['ms']:9.4f} ms  x{speed if speed is not None else float('nan'):.3f}"
            f"  compile {row['compile_s']:6.1f} s  autotune {row['autotune_s']:6.1f} s  "
            f"err {row['rel_err_fp64']:.1e}  wins {row['template_wins']}/{row['ops']}"
            + (f"  used {row['used']}" if row["mode"] == "fastest" else ""))


# --- step 3: autotune cost -------------------------------------------------------------------

def step_autotune_cost(run: Run) -> None:
    import torch

    emulation = Emulation(run)
    emulation.probe()
    m, n, k = run.sizes.cost_gemm
    case = Case("cost", f"gemm {m}x{n}x{k}", "gemm", (m, n, k), {})
    model, inputs = build_case(case, run.device, getattr(torch, run.sizes.dtype))
    ref = fp64_reference(model, inputs)
    budget = run.args.exhaustive_budget_s or run.sizes.cost_budget_s
    modes = {
        "gated": emulation.settings(min_sms=GATE_SMS, verify=False),
        "exhaustive+budget": emulation.settings(search_space="EXHAUSTIVE", budget_s=budget,
                                                verify=True),
        "exhaustive cap8+verify": emulation.settings(search_space="EXHAUSTIVE",
                                                     max_choices=8, verify=True),
        "exhaustive cap8 no-verify": emulation.settings(search_space="EXHAUSTIVE",
                                                        max_choices=8, verify=False),
    }
    for mode, settings in modes.items():
        estimate = run.sizes.cost_estimate_s[mode]
        if not run.fits(estimate, f"step 3 {mode}"):
            continue
        started = time.perf_counter()
        try:
            row = compile_and_time(run, emulation, model, inputs, ref, settings, "autotune",
                                   mode)
        except Exception as exc:
            row = {"error": f"{type(exc).__name__}: {exc}"[:400]}
            run.log_raw(traceback.format_exc())
        run.spent(estimate, time.perf_counter() - started)
        row = {"case": case.label, "mode": mode, "settings": settings, **row}
        if "offered" in row:
            offered_templates = max(row["offered"] - row.get("externs", 0), 0)
            row["reached"] = f"{row['templates_benchmarked']} of {offered_templates} templates"
        run.results["autotune_cost"].append(row)
        run.log(f"step 3: {mode:26s} " + (
            f"{row['ms']:.4f} ms, autotune {row['autotune_s']:.1f} s, compile "
            f"{row['compile_s']:.1f} s, {row.get('reached', '')}, winner {row['winner']}"
            if "ms" in row else f"ERROR {row['error']}"))
        run.save()


def compile_and_time(run: Run, emulation: Emulation, model: Any, inputs: tuple, ref: Any,
                     settings: dict[str, Any], step: str, mode: str) -> dict[str, Any]:
    """Compile cold under ``settings`` and the emulation; time; check; summarize decisions."""
    import torch
    import torch._inductor.config as config

    import inductor_sm_override as iso

    iso.clear_decisions()
    with cold_cache(run), torch.no_grad(), warnings.catch_warnings(record=True), \
            config.patch(_inductor_patches(run, fx_graph_cache=False)), emulation.limit():
        fn = torch.compile(model, mode=MODE, dynamic=False)
        started = time.perf_counter()
        with iso.override(**settings):
            out = fn(*inputs)
        compile_s = time.perf_counter() - started
        events = iso.decisions()
        frames_before = _frames_compiled()
        ms, spread = gpu_time_ms(lambda: fn(*inputs), run.device, run.sizes.bench_rep_ms)
        recompiled = _frames_compiled() - frames_before
    run.decisions(step, "cost", mode, events)
    facts = summarize_events(events)
    externs = sum(len(e.get("externs", ())) for e in events)
    templates_run = sum(1 for e in events for name, t in e.get("timings", {}).items()
                        if t is not None and name not in e.get("externs", ()))
    return {"ms": round(ms, 5), "spread": round(spread, 4), "compile_s": round(compile_s, 3),
            "rel_err_fp64": rel_error(out, ref), "externs": externs,
            "recompiled_while_timed": recompiled,
            "templates_benchmarked": templates_run, **facts}


# --- step 4: training step -------------------------------------------------------------------

def step_training(run: Run) -> None:
    import torch

    emulation = Emulation(run)
    emulation.probe()
    tokens, d, hidden = run.sizes.train_dims
    case = Case("train", f"MLP block training step M={tokens} ({d}/{hidden})", "mlp",
                (tokens, d, hidden), {})
    base, (x,) = build_case(case, run.device, getattr(torch, run.sizes.dtype))
    base.train()
    wide = copy.deepcopy(base).double()
    wide(x.double()).float().square().mean().backward()  # fp64 reference gradients
    ref_grads = {name: p.grad for name, p in wide.named_parameters()}
    modes = {"gated": emulation.settings(min_sms=GATE_SMS, verify=False),
             "cap8+verify": emulation.settings(max_choices=8, verify=True)}
    results: dict[str, dict[str, Any]] = {}
    for mode, settings in modes.items():
        estimate = run.sizes.train_estimate_s[mode]
        if not run.fits(estimate, f"step 4 {mode}"):
            continue
        started = time.perf_counter()
        try:
            row = training_mode(run, emulation, base, x, ref_grads, settings, mode)
        except Exception as exc:
            row = {"error": f"{type(exc).__name__}: {exc}"[:400]}
            run.log_raw(traceback.format_exc())
        run.spent(estimate, time.perf_counter() - started)
        results[mode] = {"case": case.label, "mode": mode, **row}
    gated = results.get("gated", {}).get("ms")
    for row in results.values():
        if gated and row.get("ms"):
            row["speedup_vs_gated"] = round(gated / row["ms"], 4)
        run.results["training"].append(row)
        run.log(f"step 4: {row['mode']:12s} " + (
            f"{row['ms']:.4f} ms/step, compile {row['compile_s']:.1f} s, autotune ops: "
            f"{row['forward_ops']} forward + {row['backward_ops']} backward, grad err "
            f"{row['grad_rel_err_fp64']:.1e}" if "ms" in row else f"ERROR {row['error']}"))
    run.save()


def training_mode(run: Run, emulation: Emulation, base: Any, x: Any, ref_grads: dict,
                  settings: dict[str, Any], mode: str) -> dict[str, Any]:
    import torch
    import torch._inductor.config as config

    import inductor_sm_override as iso

    model = copy.deepcopy(base)
    linears = sum(1 for mod in model.modules() if isinstance(mod, torch.nn.Linear))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)
    iso.clear_decisions()
    patches = {**_inductor_patches(run, fx_graph_cache=False), "freezing": False}
    with cold_cache(run), warnings.catch_warnings(record=True), config.patch(patches), \
            emulation.limit():
        fn = torch.compile(model, mode=MODE, dynamic=False)
        started = time.perf_counter()
        with iso.override(**settings):
            loss = fn(x).float().square().mean()
            forward_events = len(iso.decisions())
            loss.backward()
        compile_s = time.perf_counter() - started
        events = iso.decisions()
        grad_err = max(rel_error(p.grad, ref_grads[name])
                       for name, p in model.named_parameters())

        def train_step() -> None:
            optimizer.zero_grad(set_to_none=True)
            fn(x).float().square().mean().backward()
            optimizer.step()

        frames_before = _frames_compiled()
        ms, spread = gpu_time_ms(train_step, run.device, run.sizes.bench_rep_ms)
        recompiled = _frames_compiled() - frames_before
    run.decisions("training", "train", mode, events)
    # backward GEMMs are those past the forward's Linear layers, whenever they were compiled
    # (at the first .backward(), or eagerly with the forward where the backward is not lazy)
    backward_ops = max(len(events) - min(forward_events, linears), 0)
    return {"ms": round(ms, 5), "spread": round(spread, 4), "compile_s": round(compile_s, 3),
            "grad_rel_err_fp64": grad_err, "forward_ops": len(events) - backward_ops,
            "backward_ops": backward_ops,
            "ops_during_backward_call": len(events) - forward_events,
            "backward_decisions_present": backward_ops > 0,
            "recompiled_while_timed": recompiled, **summarize_events(events)}


# --- goals, summary, plot ----------------------------------------------------------------------

def goals(results: dict[str, Any]) -> list[dict[str, str]]:
    """The issue's GPU goals from the rows: PASS / MISS / NOT MEASURED, with the figures."""
    rows = [r for r in results.get("rows", []) if "ms" in r]
    by_mode = {m: {r["key"]: r for r in rows if r["mode"] == m} for m in MODES}
    cases_total = len({r["key"] for r in results.get("rows", [])}) or None
    out = []

    verified = [r for r in by_mode["forced+verify"].values() if "speedup_vs_gated" in r]
    slower = [f"{r['case']} x{r['speedup_vs_gated']:.3f} (noise {r['noise']:.0%})"
              for r in verified if r["speedup_vs_gated"] < 1 - r["noise"]]
    if not verified:
        status, detail = "NOT MEASURED", "no forced+verify row with a gated baseline"
    else:
        status = "MISS" if slower else "PASS"
        worst = min(verified, key=lambda r: r["speedup_vs_gated"])
        detail = (f"{len(verified)} of {cases_total} cases measured; worst {worst['case']} "
                  f"x{worst['speedup_vs_gated']:.3f}"
                  + (f"; slower beyond noise: {', '.join(slower)}" if slower else ""))
    capped = [r for r in by_mode["cap8+verify"].values() if "speedup_vs_gated" in r]
    if capped:
        worst = min(capped, key=lambda r: r["speedup_vs_gated"])
        beyond = sum(1 for r in capped if r["speedup_vs_gated"] < 1 - r["noise"])
        detail += (f" (cap8+verify, not judged: worst {worst['case']} "
                   f"x{worst['speedup_vs_gated']:.3f}, {beyond} slower beyond noise)")
    out.append({"goal": "forced + verified never slower than gated beyond noise",
                "status": status, "detail": detail})

    fastest = [r["speedup_vs_gated"] for r in by_mode["fastest"].values()
               if "speedup_vs_gated" in r and r["kind"] != "gemm"]
    if not fastest:
        status, detail = "NOT MEASURED", "no model-level fastest row"
    else:
        median = statistics.median(fastest)
        status = "PASS" if median >= 1.05 else "MISS"
        detail = (f"median x{median:.3f} over {len(fastest)} model cases "
                  f"({', '.join(f'x{v:.3f}' for v in fastest)})")
    out.append({"goal": 'median speed-up >= 1.05x with prefer="fastest" at model level',
                "status": status, "detail": detail})

    pairs = [(by_mode["forced+verify"][k], r) for k, r in by_mode["cap8+verify"].items()
             if k in by_mode["forced+verify"]]
    timed = [(u, c) for u, c in pairs if u.get("autotune_s") and c.get("autotune_s") is not None]
    if not timed:
        status, detail = "NOT MEASURED", "no case with both uncapped and cap8 autotune times"
    else:
        speeds = [u["ms"] / c["ms"] for u, c in timed]
        ratio = sum(c["autotune_s"] for _, c in timed) / sum(u["autotune_s"] for u, _ in timed)
        status = "PASS" if min(speeds) >= 0.97 and ratio <= 0.35 else "MISS"
        detail = (f"step 2 (DEFAULT space, {len(timed)} cases): worst speed kept "
                  f"{min(speeds):.3f}x, autotune time {ratio:.2f}x of uncapped")
    exhaustive = {r["mode"]: r for r in results.get("autotune_cost", []) if "ms" in r}
    if "exhaustive+budget" in exhaustive and "exhaustive cap8+verify" in exhaustive:
        u, c = exhaustive["exhaustive+budget"], exhaustive["exhaustive cap8+verify"]
        detail += (f"; step 3 EXHAUSTIVE (budget-capped, reached {u.get('reached')}): cap8 "
                   f"speed {u['ms'] / c['ms']:.3f}x at {c['autotune_s']:.1f} s vs "
                   f"{u['autotune_s']:.1f} s")
    out.append({"goal": "max_choices=8 keeps >= 0.97x of uncapped speed at <= 0.35x its "
                        "autotune time", "status": status, "detail": detail})

    on = exhaustive.get("exhaustive cap8+verify")
    off = exhaustive.get("exhaustive cap8 no-verify")
    if not on or not off or not off.get("autotune_s"):
        status, detail = "NOT MEASURED", "step 3's verify on/off pair did not run"
    else:
        overhead = on["autotune_s"] / off["autotune_s"] - 1
        status = "PASS" if overhead <= 0.10 else "MISS"
        detail = (f"{overhead:+.1%} ({on['autotune_s']:.2f} s on vs {off['autotune_s']:.2f} s "
                  "off, one cold compile each: noisy)")
    out.append({"goal": "verify overhead <= 10% of autotune time", "status": status,
                "detail": detail})
    return out


def summary_markdown(results: dict[str, Any], tag: str) -> str:
    info = results["machine"]
    emu = results.get("emulation") or {}
    lines = [f"# gpu-check {tag}", "",
             f"{info['device']}, torch {info['torch']}, triton {info['triton']}, "
             f"python {info['python']}, {info['date']}."
             + (" **DRY RUN on the CPU: tiny sizes, the figures say nothing about GPUs.**"
                if results["dry_run"] else ""),
             f"Emulation: {emu.get('note', 'not reached')}. Elapsed "
             f"{results.get('elapsed_s', 0):.0f} s of a {results['limit_s']:.0f} s limit.", "",
             "## GPU goals", "", "| goal | status | figures |", "|---|---|---|"]
    lines += [f"| {g['goal']} | {g['status']} | {g['detail']} |" for g in results["goals"]]
    lines += ["", "## Steps", "", "| step | status | seconds (estimate) |", "|---|---|---|"]
    for key, step in results["steps"].items():
        lines.append(f"| {key} | {step['status']} | {step.get('seconds', '-')} "
                     f"({step['estimate_s']:.0f}) |")
    pytest = results.get("pytest")
    if pytest:
        lines += ["", f"pytest -m gpu: exit {pytest['exit_code']}, {pytest.get('tests', 0)} "
                  f"tests, {pytest.get('failures', 0)} failed, {pytest.get('errors', 0)} "
                  f"errors, {pytest.get('skipped', 0)} skipped"
                  + (" (timed out)" if pytest.get("timed_out") else "") + "."]
        lines += [f"- FAILED {name}" for name in pytest.get("failed", [])]
    if results["rows"]:
        lines += ["", "## 46-SM emulation", "",
                  "| case | mode | ms | vs gated | compile s | autotune s | err vs fp64 | "
                  "template wins | winner |", "|---|---|---|---|---|---|---|---|---|"]
        for r in results["rows"]:
            if "ms" not in r:
                lines.append(f"| {r['case']} | {r['mode']} | error: {r.get('error', '')[:80]} "
                             "| | | | | | |")
                continue
            winner = r["winner"] if len(r["winner"]) <= 60 else r["winner"][:57] + "..."
            used = f" (used {r['used']})" if r["mode"] == "fastest" else ""
            lines.append(f"| {r['case']} | {r['mode']}{used} | {r['ms']:.4f} | "
                         f"x{r.get('speedup_vs_gated', float('nan')):.3f} | {r['compile_s']:.1f}"
                         f" | {r['autotune_s']:.1f} | {r['rel_err_fp64']:.1e} | "
                         f"{r['template_wins']}/{r['ops']} | {winner} |")
    if results["autotune_cost"]:
        lines += ["", "## Autotune cost (one GEMM)", "",
                  "| mode | ms | autotune s | compile s | reached | winner |",
                  "|---|---|---|---|---|---|"]
        for r in results["autotune_cost"]:
            lines.append(f"| {r['mode']} | " + (
                f"{r['ms']:.4f} | {r['autotune_s']:.1f} | {r['compile_s']:.1f} | "
                f"{r.get('reached', '')} | {r['winner']} |" if "ms" in r
                else f"error: {r.get('error', '')[:80]} | | | | |"))
    if results["training"]:
        lines += ["", "## Training step (MLP block)", "",
                  "| mode | ms/step | vs gated | compile s | forward ops | backward ops | "
                  "grad err vs fp64 |", "|---|---|---|---|---|---|---|"]
        for r in results["training"]:
            lines.append(f"| {r['mode']} | " + (
                f"{r['ms']:.4f} | x{r.get('speedup_vs_gated', float('nan')):.3f} | "
                f"{r['compile_s']:.1f} | {r['forward_ops']} | {r['backward_ops']} | "
                f"{r['grad_rel_err_fp64']:.1e} |" if "ms" in r
                else f"error: {r.get('error', '')[:80]} | | | | | |"))
        forced = next((r for r in results["training"]
                       if r["mode"] != "gated" and "backward_ops" in r), None)
        if forced is not None:
            lines += ["", "Backward GEMM decisions under the override: " + (
                f"present ({forced['backward_ops']} backward ops; templates won "
                f"{forced['template_wins']} of all {forced['ops']} ops)."
                if forced["backward_decisions_present"] else
                "ABSENT: the backward GEMMs were not autotuned under the override's settings.")]
    if results["skipped"]:
        lines += ["", "## Skipped (time limit)", ""] + [f"- {s}" for s in results["skipped"]]
    lines += ["", "## Notes", "",
              "- Every mode compiles in a fresh Inductor/Triton cache, except `fastest`: it runs "
              "after gated and cap8+verify in their cache and gets their graphs from the FX "
              "graph cache (same settings), so its compile column is not a cold compile."
              + (" (Dry run: caches are shared, C++ kernels are built once.)"
                 if results["dry_run"] else ""),
              ("- ms: median wall time (CPU dry run), measured twice;" if results["dry_run"] else
               "- ms: median GPU time (triton do_bench: CUDA events, L2 flushed), measured twice;")
              + " noise = the larger of 2% and the two modes' spreads (between their two "
              "measurements) added.",
              f"- The parts that finished took {results.get('measured_vs_estimated', 1):.2f}x "
              "their estimates (later parts were re-scaled by this before being started)."]
    recompiled = [f"{r.get('case', '')} {r['mode']}" for key in ("rows", "autotune_cost",
                                                                 "training")
                  for r in results[key] if r.get("recompiled_while_timed")]
    if recompiled:
        lines.append("- WARNING: recompiled while being timed (outside the block), so the "
                     "timed kernels may not be the block's: " + ", ".join(recompiled))
    return "\n".join(lines) + "\n"


def plot_speedups(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keyed = [r for r in rows if "speedup_vs_gated" in r and r["mode"] != "gated"]
    cases = list(dict.fromkeys(r["case"] for r in keyed))
    shown = MODES[1:]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(cases) + 2), 4.5))
    width = 0.8 / len(shown)
    for offset, mode in enumerate(shown):
        values = [next((r["speedup_vs_gated"] for r in keyed
                        if r["mode"] == mode and r["case"] == c), 0.0) for c in cases]
        ax.bar([i + offset * width for i in range(len(cases))], values, width, label=mode)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(1.05, color="grey", linewidth=0.8, linestyle="--", label="1.05x goal")
    ax.set_xticks([i + width * (len(shown) - 1) / 2 for i in range(len(cases))])
    ax.set_xticklabels(cases, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("speed-up vs gated (46-SM emulation)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, path)


# --- plan and main -----------------------------------------------------------------------------

STEPS = [
    Step("pytest", "pytest -m gpu (real gate, corrupted template, limit_sms, GPU defects)",
         step_pytest, lambda s: s.pytest_s),
    Step("emulation", "46-SM emulation: GEMMs and blocks x gated/forced+verify/cap8+verify/"
         "fastest", step_emulation, lambda s: sum(sum(c.estimate_s.values()) for c in s.cases)),
    Step("autotune", "autotune cost: one GEMM, EXHAUSTIVE (budget-capped) vs max_choices=8, "
         "verify on/off", step_autotune_cost, lambda s: sum(s.cost_estimate_s.values())),
    Step("training", "training step of the MLP block (forward + backward GEMM decisions)",
         step_training, lambda s: sum(s.train_estimate_s.values())),
]


def plan_rows(sizes: Sizes) -> list[dict[str, Any]]:
    rows = [{"step": "start-up", "title": "imports, CUDA init, warm-up compile",
             "estimate_s": sizes.startup_s}]
    rows += [{"step": s.key, "title": s.title, "estimate_s": round(s.estimate(sizes), 1)}
             for s in STEPS]
    return rows


def print_plan(sizes: Sizes, limit_s: float, dry: bool) -> bool:
    target = "CPU dry run" if dry else "NVIDIA H100 (132 SMs) emulating 46 (48) SMs, fp16"
    print(f"gpu-check plan ({target}), limit {limit_s:.0f} s:")
    total = 0.0
    for index, row in enumerate(plan_rows(sizes)):
        total += row["estimate_s"]
        print(f"  {index}. {row['step']:10s} {row['estimate_s']:6.0f} s  {row['title']}")
        if row["step"] == "emulation":
            for case in sizes.cases:
                modes = ", ".join(f"{m} {s:g}" for m, s in case.estimate_s.items())
                print(f"       {case.label:42s} {sum(case.estimate_s.values()):5.1f} s  "
                      f"({modes})")
    fits = total <= limit_s
    print(f"  total {total:.0f} s: {'fits' if fits else 'does NOT fit'} the {limit_s:.0f} s "
          "limit (steps that would not fit are skipped at run time)")
    return fits


def warm_up(run: Run) -> None:
    """The first compile of a process pays imports and the compile workers' start."""
    import torch
    import torch._inductor.config as config

    started = time.perf_counter()
    x = torch.randn(64, 64, device=run.device)
    with torch.no_grad(), config.patch(_inductor_patches(run, fx_graph_cache=False)):
        torch.compile(lambda a: (a @ a).relu(), dynamic=False)(x)
    torch._dynamo.reset()
    run.log(f"start-up: warm-up compile {time.perf_counter() - started:.1f} s")


def watchdog(run: Run) -> None:
    """End the process at limit + grace whatever it is doing (results are saved per unit)."""
    grace = run.args.grace_s
    deadline = run.limit_s + grace

    def stop() -> None:
        while run.elapsed() < deadline:
            time.sleep(1.0)
        with contextlib.suppress(Exception):
            run.results["skipped"].append(
                f"HARD STOP at {run.elapsed():.0f} s: the step in progress was cut off")
            run.log(f"HARD STOP at {run.elapsed():.0f} s (limit {run.limit_s:.0f} s + "
                    f"{grace:.0f} s): saving what finished and exiting")
            run.save()
        os._exit(3)

    threading.Thread(target=stop, name="gpu-check-watchdog", daemon=True).start()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or str(RESULTS))
    parser.add_argument("--limit-s", type=float, default=360.0)
    parser.add_argument("--grace-s", type=float, default=HARD_STOP_GRACE_S,
                        help="the watchdog ends the process at limit + this")
    parser.add_argument("--plan", action="store_true", help="print the estimates and exit")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (CI)")
    parser.add_argument("--steps", default=",".join(s.key for s in STEPS),
                        help="comma list of steps to run, of: " + ",".join(s.key for s in STEPS))
    parser.add_argument("--cases", default="", help="comma list of step-2 case keys")
    parser.add_argument("--exhaustive-budget-s", type=float, default=None)
    args = parser.parse_args(argv)
    args.steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = set(args.steps) - {s.key for s in STEPS}
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}")
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = DRY if args.dry_run else GPU
    if args.plan:
        return 0 if print_plan(sizes, args.limit_s, args.dry_run) else 1
    # on a GPU: a fresh Inductor cache for the process (set before torch is imported); a
    # dry run keeps the caller's (CI's tests share theirs: the C++ kernels are built once)
    inductor_cache = None if args.dry_run else tempfile.mkdtemp(prefix="gpu-check-inductor-")
    if inductor_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = inductor_cache
    sys.path.insert(0, str(ROOT))
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU is visible; use --dry-run (make gpu-check DRY_RUN=1) "
              "to run the same code on the CPU", file=sys.stderr)
        return 2
    device = "cpu" if args.dry_run else "cuda"
    run = Run(args, sizes, device)
    watchdog(run)
    run.log(f"gpu-check {run.tag}: {run.info['device']}, torch {run.info['torch']}, "
            f"triton {run.info['triton']}, limit {run.limit_s:.0f} s, out {run.out}")
    for step in STEPS:
        run.results["steps"][step.key] = {"status": "pending",
                                          "estimate_s": round(step.estimate(sizes), 1)}
    try:
        warm_up(run)
        for number, step in enumerate(STEPS, 1):
            record = run.results["steps"][step.key]
            if step.key not in args.steps:
                record["status"] = "not selected"
                continue
            skipped_before = len(run.results["skipped"])
            # a step starts when its smallest unit fits; its units skip themselves later
            if not run.fits(min(step.estimate(sizes), 0.25 * step.estimate(sizes) + 5),
                            f"step {number} {step.key}"):
                record["status"] = "skipped (time)"
                run.save()
                continue
            run.log(f"step {number} {step.key}: start ({step.title}; estimate "
                    f"{step.estimate(sizes):.0f} s x{run.factor:.2f})")
            started = time.perf_counter()
            try:
                step.run(run)
                partial = len(run.results["skipped"]) > skipped_before
                record["status"] = "partial (time)" if partial else "done"
            except Exception as exc:
                record["status"] = f"error: {type(exc).__name__}: {exc}"[:300]
                run.log_raw(traceback.format_exc())
            record["seconds"] = round(time.perf_counter() - started, 1)
            run.log(f"step {number} {step.key}: {record['status']} in {record['seconds']} s")
            run.save(plot=step.key == "emulation")
    finally:
        run.save(plot=bool(run.results["rows"]))
        if inductor_cache:
            shutil.rmtree(inductor_cache, ignore_errors=True)
    for goal in run.results["goals"]:
        run.log(f"goal {goal['status']:12s} {goal['goal']}: {goal['detail']}")
    run.log(f"done in {run.elapsed():.0f} s; files: {run.path('.*')}")
    run.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
