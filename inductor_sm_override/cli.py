"""The ``inductor-sm-override`` command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    devices = [args.device] if args.device else ["cpu"]
    if not args.device:
        import torch

        if torch.cuda.is_available():
            devices.append("cuda")
    for device in devices:
        result = run_demo(device)
        print(f"demo on {device}: compiled in {result['compile_s']} s, "
              f"max |compiled - eager| = {result['max_abs_err']:.3g}")
        gate = result["gate"]
        if gate:
            print(f"  gate: {gate['device']} has {gate['sms']} SMs; torch says "
                  f"{gate['torch_answer']}, with the override {gate['answer']}")
        else:
            print("  gate: not consulted (no GPU GEMM was lowered)")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from .override import status

    print(json.dumps(status(), indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inductor-sm-override",
        description="Triton GEMM templates for torch.compile max-autotune on mid-size GPUs.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="compile a small real model under the override")
    demo.add_argument("--device", choices=["cpu", "cuda"], default=None,
                      help="default: cpu, plus cuda when a GPU is present")
    demo.set_defaults(func=_cmd_demo)
    stat = sub.add_parser("status", help="print iso.status() as JSON")
    stat.set_defaults(func=_cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
