"""Per-call cost of a compiled function: eager, torch.compile, compiled in a block,
iso.compile, iso.backend, side by side in one run.

    python benchmarks/call_overhead.py [--calls 3000] [--rounds 7] [--device cpu|cuda]
                                       [--threads 1] [--clock thread|wall]
                                       [--smoke] [--json] [--no-write]

A small MLP (64 -> 64 -> 64, batch 8) is compiled once per way with the same mode
(``max-autotune-no-cudagraphs``; without freezing, so every way gets the same kernels) and
called under ``torch.no_grad()`` on one intra-op thread (``--threads``), timed by the
calling thread's CPU time on the CPU (``--clock``: a busy machine's other processes do not
count; wall time, synchronised, on a GPU). Each way compiles its own entry function (a code
object of its own, as iso.compile does): dynamo keeps compiled code per code object, so
compiling one module several ways would make every call check the other ways' guards too.

Each round times ``--calls`` back-to-back calls of every way, the ways interleaved in a
rotating order; the per-call figure is the median over the rounds. Ratios are to
torch.compile measured in this run: per round (the ways ran next to each other), then the
median over the rounds (also given: the ratio of the fastest rounds). Goal: iso.compile
and iso.backend <= 1.05x (a call of their result does no toolkit work: the settings apply
only where Inductor compiles).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import types
from collections.abc import Callable
from typing import Any

from _common import machine, write_result

MODE = "max-autotune-no-cudagraphs"
GOAL = 1.05
WAYS = ("eager", "torch.compile", "compiled in iso.override()", "iso.compile", "iso.backend")


def entry(model: Any, label: str) -> Callable[..., Any]:
    """``model(x)`` through a function with a code object of its own."""

    def call(x: Any) -> Any:
        return model(x)

    name = f"call_overhead_{label}"
    code = call.__code__.replace(co_name=name, co_qualname=name)
    return types.FunctionType(code, call.__globals__, name, None, call.__closure__)


def build(device: str) -> tuple[dict[str, Callable[[], Any]], dict[str, Any]]:
    """The callables to time (each already compiled and warmed up) and what was built."""
    import torch

    import inductor_sm_override as iso

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 64)).to(device).eval()
    x = torch.randn(8, 64, device=device)
    torch._dynamo.reset()
    with torch.no_grad():
        plain = torch.compile(entry(model, "plain"), mode=MODE)
        with iso.override():
            in_block = torch.compile(entry(model, "block"), mode=MODE)
            in_block(x)  # compiled inside the block, called outside it below
        checked = iso.compile(model, (x,), mode=MODE)
        bound = torch.compile(entry(model, "backend"), backend=iso.backend(mode=MODE))
        fns = {"eager": model, "torch.compile": plain, "compiled in iso.override()": in_block,
               "iso.compile": checked, "iso.backend": bound}
        for fn in fns.values():
            for _ in range(20):
                fn(x)
            torch.testing.assert_close(fn(x), model(x))
    calls = {name: (lambda fn=fn: fn(x)) for name, fn in fns.items()}
    return calls, {"iso.compile used": checked.used, "patched after compile":
                   iso.status()["patched"]}


def time_calls(fn: Callable[[], Any], calls: int, sync: Callable[[], None],
               clock: Callable[[], float]) -> float:
    """Microseconds per call over ``calls`` back-to-back calls."""
    sync()
    start = clock()
    for _ in range(calls):
        fn()
    sync()
    return (clock() - start) / calls * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: the per-call overhead, not OpenMP "
                        "contention on a busy machine, dominates the differences)")
    parser.add_argument("--clock", default=None, choices=["thread", "wall"],
                        help="thread: CPU time of the calling thread (default on the CPU: "
                        "other processes on a busy machine do not count); wall: elapsed "
                        "time (default with --device cuda, synchronised)")
    parser.add_argument("--smoke", action="store_true", help="300 calls x 3 rounds")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.calls, args.rounds = 300, 3

    import torch

    torch.set_num_threads(args.threads)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    args.clock = args.clock or ("wall" if args.device == "cuda" else "thread")
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    fns, built = build(args.device)
    samples: dict[str, list[float]] = {name: [] for name in WAYS}
    for round_ in range(args.rounds):
        for i in range(len(WAYS)):  # the order rotates: no way always runs first or last
            name = WAYS[(i + round_) % len(WAYS)]
            samples[name].append(time_calls(fns[name], args.calls, sync, clock))
    us = {name: statistics.median(values) for name, values in samples.items()}
    base = samples["torch.compile"]
    # per round (the ways ran next to each other), then the median: load drift cancels
    ratio = {name: statistics.median(v / b for v, b in zip(samples[name], base, strict=True))
             for name in WAYS}
    least = {name: min(values) / min(base) for name, values in samples.items()}
    payload = {
        "benchmark": "call_overhead", "machine": machine(), "device": args.device,
        "model": "MLP 64->64->64, batch 8, no_grad", "mode": MODE, "calls": args.calls,
        "threads": args.threads, "clock": args.clock,
        "rounds": args.rounds, "us_per_call_median": us, "ratio_to_torch_compile": ratio,
        "ratio_of_fastest_rounds": least, "samples_us": samples,
        "goal": f"iso.compile and iso.backend <= {GOAL}x",
        "goal_met": ratio["iso.compile"] <= GOAL and ratio["iso.backend"] <= GOAL, **built,
    }
    if args.json:
        print(json.dumps(payload, indent=2, default=str))
    else:
        for name in WAYS:
            print(f"{name:>28}: {us[name]:8.2f} us/call  {ratio[name]:5.3f}x torch.compile "
                  f"(fastest rounds: {least[name]:5.3f}x)")
        print(f"goal (iso.compile and iso.backend <= {GOAL}x): "
              f"{'met' if payload['goal_met'] else 'NOT met'}")
    if not args.no_write and not args.smoke:
        print(f"wrote {write_result('call_overhead', payload)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
