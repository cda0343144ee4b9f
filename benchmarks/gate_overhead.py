"""Cost of one SM-gate call: package never imported vs imported-but-inactive vs active.

Each mode runs in its own subprocess (so "never imported" is real), the modes are
interleaved over several rounds, and the medians and ratios come from this one run.
The GPU is faked (46 SMs) so this runs anywhere.

    python benchmarks/gate_overhead.py [--calls 200000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import sys, time, json
mode, calls = sys.argv[1], int(sys.argv[2])
import torch
import torch._inductor.utils as utils
from torch._dynamo import device_interface as di

class P:  # the fields Inductor reads
    name = "fake"; multi_processor_count = 46; major = 8; minor = 9
    regs_per_multiprocessor = 65536; max_threads_per_multi_processor = 1536
    max_threads_per_block = 1024; warp_size = 32
get = staticmethod(lambda d=None: P)
di.CudaInterface.get_device_properties = get
di.CudaInterface.get_compute_capability = staticmethod(lambda d=None: 89)
torch.cuda.get_device_properties = lambda d=None: P
if mode != "never":
    import inductor_sm_override as iso
block = None
if mode == "active":
    block = iso.override()
    block.__enter__()
gate = utils.is_big_gpu
gate(0)
start = time.perf_counter()
for _ in range(calls):
    gate(0)
elapsed = time.perf_counter() - start
if block is not None:
    block.__exit__(None, None, None)
print(json.dumps({"ns_per_call": elapsed / calls * 1e9}))
"""

MODES = ("never", "inactive", "active")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    samples: dict[str, list[float]] = {m: [] for m in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            out = subprocess.run([sys.executable, "-c", CHILD, mode, str(args.calls)],
                                 capture_output=True, text=True, check=True)
            samples[mode].append(json.loads(out.stdout.strip().splitlines()[-1])["ns_per_call"])
    med = {m: statistics.median(v) for m, v in samples.items()}
    result = {
        "ns_per_call_median": med,
        "inactive_vs_never": med["inactive"] / med["never"],
        "active_vs_never": med["active"] / med["never"],
        "rounds": args.rounds,
        "calls": args.calls,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for m in MODES:
            print(f"{m:>9}: {med[m]:8.1f} ns/call")
        print(f"inactive / never = {result['inactive_vs_never']:.3f}x")
        print(f"active   / never = {result['active_vs_never']:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
