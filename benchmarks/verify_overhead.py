"""Autotune time with verification on vs off, measured side by side in one run.

    python benchmarks/verify_overhead.py [--device cpu|cuda] [--rounds 3] [--smoke]

Goal: verify=True costs <= 10% extra autotune time. Rounds alternate the order.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from _common import machine, mlp_setup, write_result


def autotune_seconds(model: Any, x: Any, verify: bool, device: str) -> float:
    import torch
    import torch._inductor.config as config

    import inductor_sm_override as iso

    torch._dynamo.reset()
    iso.clear_decisions()
    # both modes benchmark every time (verify=True switches the autotune cache off itself)
    patches = {"fx_graph_cache": False, "autotune_local_cache": False,
               "freezing": device == "cpu"}
    with torch.no_grad(), config.patch(patches), iso.override(verify=verify):
        torch.compile(model, mode="max-autotune-no-cudagraphs")(x)
    return sum(e["seconds"] or 0.0 for e in iso.decisions())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, choices=["cpu", "cuda"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    model, x, device, _dtype, shape = mlp_setup(args.device, args.smoke)
    autotune_seconds(model, x, True, device)  # warm-up
    samples: dict[bool, list[float]] = {True: [], False: []}
    started = time.perf_counter()
    for index in range(1 if args.smoke else args.rounds):
        for verify in ((True, False) if index % 2 == 0 else (False, True)):
            samples[verify].append(autotune_seconds(model, x, verify, device))
    on, off = statistics.median(samples[True]), statistics.median(samples[False])
    ratio = on / off if off else float("nan")
    print(f"autotune: verify on {on:.3f} s, off {off:.3f} s -> {ratio:.3f}x "
          f"(goal <= 1.10x); {time.perf_counter() - started:.0f} s total")
    payload = {"benchmark": "verify_overhead", "machine": machine(),
               "model": shape,
               "samples_s": {"verify_on": samples[True], "verify_off": samples[False]},
               "median_s": {"verify_on": on, "verify_off": off}, "ratio": ratio}
    if not args.no_write:
        print("wrote", write_result("verify_overhead" + ("-smoke" if args.smoke else ""),
                                    payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
