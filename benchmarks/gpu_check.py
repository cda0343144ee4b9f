"""`make gpu-check`: one prepared GPU acceptance run that fits in six minutes.

    PYTHONPATH=$PWD python3 benchmarks/gpu_check.py [--out DIR] [--limit-s 360]
        [--plan] [--dry-run] [--steps pytest,emulation,autotune,training]

(``make gpu-check`` runs the same; a GPU host may have no make.) The parts live in
``benchmarks/gpu_check_lib/``: one module per step, the run (its clock and the one timed-part
helper every unit goes through), the cases and sizes, the measurements, the report.

Runs from the source tree (no venv, no pip) with what a bare GPU host has (python3,
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
process at ``--limit-s`` + 60 s whatever happens. ``--plan`` prints each step's estimate
(the plan must total <= 300 s); ``--dry-run`` runs the same code on the CPU with tiny
sizes (CI), with CUDA hidden from its pytest step, and judges nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback

from _common import RESULTS
from gpu_check_lib.cases import DRY, GPU, GPU_CASES, MODES, ROOT, Sizes
from gpu_check_lib.measure import inductor_patches, kernels_in_code
from gpu_check_lib.plan import PLAN_LIMIT_S, STEPS, plan_rows
from gpu_check_lib.report import goal_lines, goals
from gpu_check_lib.run import Run

__all__ = ["DRY", "GPU", "GPU_CASES", "MODES", "PLAN_LIMIT_S", "STEPS", "goals",
           "kernels_in_code", "main", "plan_rows", "print_plan"]
HARD_STOP_GRACE_S = 60.0


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
    budget = min(limit_s, PLAN_LIMIT_S)
    fits = total <= budget
    print(f"  total {total:.0f} s: {'fits' if fits else 'does NOT fit'} the {budget:.0f} s plan "
          f"(the run stops itself at {limit_s:.0f} s, skipping what would not fit)")
    return fits


def warm_up(run: Run) -> None:
    """The first compile of a process pays imports and the compile workers' start."""
    import torch
    import torch._inductor.config as config

    started = time.perf_counter()
    x = torch.randn(64, 64, device=run.device)
    with torch.no_grad(), config.patch(inductor_patches(run, fx_graph_cache=False)):
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
    run = Run(args, sizes, device, plan_rows(sizes))
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
    for line in goal_lines(run.results):  # a dry run says it judged nothing
        run.log(line)
    run.log(f"done in {run.elapsed():.0f} s; files: {run.path('.*')}")
    run.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
