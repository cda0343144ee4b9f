"""Autotune time and kernel time: uncapped vs max_choices vs budget_s, side by side.

    python benchmarks/compile_budget.py [--device cpu|cuda] [--search-space EXHAUSTIVE]
                                        [--smoke] [--no-write]

On the CPU (no GPU here) Inductor autotunes its C++ GEMM template against MKL under
``freezing``: a smoke test of the mechanism. On a GPU it forces Triton templates.
Goals (GPU): max_choices=8 costs <= 0.35x the uncapped EXHAUSTIVE autotune time with
kernels >= 0.97x as fast; the budget is kept within max(10%, one op's smallest unit).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from _common import machine, median_ms, mlp_setup, write_result


def run_mode(model: Any, x: Any, settings: dict[str, Any], device: str) -> dict[str, Any]:
    import time

    import torch
    import torch._inductor.config as config

    import inductor_sm_override as iso

    torch._dynamo.reset()
    iso.clear_decisions()
    patches = {"fx_graph_cache": False, "autotune_local_cache": False,
               "freezing": device == "cpu"}
    started = time.perf_counter()
    with torch.no_grad(), config.patch(patches), iso.override(**settings):
        compiled = torch.compile(model, mode="max-autotune-no-cudagraphs")
        compiled(x)
        compile_s = time.perf_counter() - started
        events = iso.decisions()
        with torch.no_grad():
            kernel_ms = median_ms(lambda: compiled(x))
    autotune_s = sum(e["seconds"] or 0.0 for e in events)
    templates_run = sum(
        1 for e in events for n, t in e["timings"].items() if t is not None and n not in
        ("_mkl_linear", "mm", "addmm", "bias_addmm"))
    row = {"settings": settings, "compile_s": round(compile_s, 3),
           "autotune_s": round(autotune_s, 3), "ops": len(events),
           "templates_benchmarked": templates_run, "model_ms": round(kernel_ms, 4)}
    budget = settings.get("budget_s")
    if budget is not None and events:
        smallest = min((e["seconds"] for e in events if e["seconds"]), default=0.0)
        allowed = max(0.1 * budget, smallest)
        row["budget_overrun_s"] = round(autotune_s - budget, 3)
        row["budget_kept"] = autotune_s - budget <= allowed
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, choices=["cpu", "cuda"])
    parser.add_argument("--search-space", default=None, choices=["DEFAULT", "EXHAUSTIVE"])
    parser.add_argument("--smoke", action="store_true", help="tiny, for CI")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    model, x, device, _dtype, shape = mlp_setup(args.device, args.smoke)
    space = {"search_space": args.search_space} if args.search_space else {}
    modes: list[dict[str, Any]] = [dict(space)]
    caps = [1] if args.smoke else [1, 4, 8]
    budgets = [0.0] if args.smoke else [0.0, 0.5, 1.0, 5.0]
    modes += [{**space, "max_choices": n} for n in caps]
    modes += [{**space, "budget_s": b} for b in budgets]
    run_mode(model, x, {}, device)  # warm-up: the first compile of a process pays imports
    rows = [run_mode(model, x, m, device) for m in modes]
    base = rows[0]
    for row in rows:
        row["autotune_vs_uncapped"] = round(row["autotune_s"] / base["autotune_s"], 3) \
            if base["autotune_s"] else None
        row["speed_vs_uncapped"] = round(base["model_ms"] / row["model_ms"], 3)
        print(f"{row['settings']!s:45s} autotune {row['autotune_s']:7.2f} s "
              f"({row['autotune_vs_uncapped']}x)  model {row['model_ms']:.3f} ms "
              f"({row['speed_vs_uncapped']}x speed)  templates {row['templates_benchmarked']}"
              + (f"  budget kept: {row['budget_kept']}" if "budget_kept" in row else ""))
    payload = {"benchmark": "compile_budget", "machine": machine(),
               "model": shape,
               "rows": rows}
    if not args.no_write:
        print("wrote", write_result("compile_budget" + ("-smoke" if args.smoke else ""),
                                    payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
