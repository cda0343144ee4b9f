"""Verification's share of autotune time, before and after issue 27, measured in one run.

    python benchmarks/verify_overhead.py [--device cpu|cuda] [--rounds 3] [--smoke]

Three modes, alternating order per round: verify off; verify on with torch's own example
inputs (``selector.OWN_INPUTS`` off: the check before issue 27); verify on with the check's
own seeded inputs (after). Per mode: the autotune time of the compile (sum of the ops'
"seconds") and, timed inside it, the check itself (``selector._check``: the reference and
the comparison) plus the refill of each draw (``inputs.reseed``). Goal: verify=True costs
<= 10% extra autotune time.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from typing import Any

from _common import machine, mlp_setup, write_result

MODES = ("off", "before", "after")
SPENT = {"check": 0.0, "reseed": 0.0}


def _timed(key: str, fn: Any) -> Any:
    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SPENT[key] += time.perf_counter() - started

    return timed


def autotune_seconds(model: Any, x: Any, mode: str, device: str) -> dict[str, float]:
    import torch
    import torch._inductor.config as config

    import inductor_sm_override as iso
    from inductor_sm_override.hooks import selector

    torch._dynamo.reset()
    iso.clear_decisions()
    SPENT.update(check=0.0, reseed=0.0)
    selector.OWN_INPUTS["on"] = mode == "after"
    # every mode benchmarks every time (verify=True switches the autotune cache off itself)
    patches = {"fx_graph_cache": False, "autotune_local_cache": False,
               "freezing": device == "cpu"}
    try:
        with torch.no_grad(), config.patch(patches), iso.override(verify=mode != "off"):
            torch.compile(model, mode="max-autotune-no-cudagraphs")(x)
    finally:
        selector.OWN_INPUTS["on"] = True
    return {"autotune_s": sum(e["seconds"] or 0.0 for e in iso.decisions()), **SPENT}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, choices=["cpu", "cuda"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    from inductor_sm_override.hooks import selector

    selector._check = _timed("check", selector._check)
    selector.reseed = _timed("reseed", selector.reseed)
    model, x, device, _dtype, shape = mlp_setup(args.device, args.smoke)
    autotune_seconds(model, x, "after", device)  # warm-up
    samples: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    started = time.perf_counter()
    for index in range(1 if args.smoke else args.rounds):
        for mode in MODES if index % 2 == 0 else tuple(reversed(MODES)):
            samples[mode].append(autotune_seconds(model, x, mode, device))

    def median(mode: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[mode])

    off = median("off", "autotune_s")
    summary: dict[str, Any] = {}
    for mode in ("before", "after"):
        total = median(mode, "autotune_s")
        inside = median(mode, "check") + median(mode, "reseed")
        summary[mode] = {"autotune_s": total, "check_s": median(mode, "check"),
                         "reseed_s": median(mode, "reseed"),
                         "share_timed": inside / total if total else float("nan"),
                         "share_vs_off": (total - off) / total if total else float("nan"),
                         "ratio_vs_off": total / off if off else float("nan")}
        print(f"verify on, {mode} issue 27: autotune {total:.3f} s (off {off:.3f} s -> "
              f"{summary[mode]['ratio_vs_off']:.3f}x, goal <= 1.10x); the check's share "
              f"{summary[mode]['share_timed']:.1%} timed inside ({summary[mode]['check_s']:.3f}"
              f" s check + {summary[mode]['reseed_s']:.4f} s input draws)")
    print(f"{time.perf_counter() - started:.0f} s total")
    payload = {"benchmark": "verify_overhead", "machine": machine(), "model": shape,
               "modes": {"off": "verify=False", "before": "verify on torch's example inputs",
                         "after": "verify on the check's own seeded inputs"},
               "samples": samples, "median_autotune_off_s": off, "summary": summary}
    if not args.no_write:
        print("wrote", write_result("verify_overhead" + ("-smoke" if args.smoke else ""),
                                    payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
