"""The ``inductor-sm-override`` command (also ``python -m inductor_sm_override``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..api.block import status
from ..core.errors import SettingsError
from ..core.settings import accepted, near_miss_line, report_path_problem, validate_field
from . import demo, doctor, launcher, report, verdict


def _setting(field: str, convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type`` that checks a value like ``Settings`` does, so a bad value is
    refused by argparse naming the flag (``argument --max-choices: -2 is not accepted: ...``)
    instead of the Python argument name."""

    def parse(raw: str) -> Any:

        expected = accepted(field).removesuffix(" or None")
        try:
            return validate_field(field, convert(raw))
        except (SettingsError, ValueError):
            raise argparse.ArgumentTypeError(
                f"{raw!r} is not accepted: expected {expected}") from None

    parse.__name__ = field  # argparse names the type in some messages
    return parse


def _report_path(raw: str) -> str:
    """``--report``: a file that can be written here (checked before the command runs)."""
    problem = report_path_problem(raw)
    if problem:
        raise argparse.ArgumentTypeError(f"{raw!r} is not accepted: {problem}")
    return raw


def _cmd_run(args: argparse.Namespace) -> int:

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print("inductor-sm-override run: give the command after --", file=sys.stderr)
        return 2
    options = {
        "min_sms": args.min_sms, "max_choices": args.max_choices, "budget_s": args.budget_s,
        "verify": False if args.no_verify else None, "rtol": args.rtol, "atol": args.atol,
        "report": args.report, "simulate_sms": args.simulate_sms,
        "search_space": args.search_space, "strict": True if args.strict else None,
        "quiet": True if args.quiet else None,
        "require_manifest": True if args.require_manifest else None,
        "fleet": args.fleet, "fleet_timeout_s": args.fleet_timeout_s,
    }
    try:
        env = launcher.run_env(options, os.environ)
    except SettingsError as exc:
        print(f"inductor-sm-override run: {exc}", file=sys.stderr)
        return 2
    near = near_miss_line(os.environ)
    if near:
        print(f"inductor-sm-override run: warning: {near}", file=sys.stderr)
    try:
        launcher.exec_command(command, env)
    except OSError as exc:
        print(f"inductor-sm-override run: cannot run {command[0]!r}: {exc}", file=sys.stderr)
        return 127 if isinstance(exc, FileNotFoundError) else 126  # as a shell says it
    return 0  # not reached: exec replaced this process


def _cmd_hook(args: argparse.Namespace) -> int:

    if args.action == "status":
        info = launcher.hook_status(os.environ, Path(args.site_dir) if args.site_dir else None)
        if args.json:
            print(json.dumps(info, indent=2))
            return 1 if info["error"] else 0
        where = ", ".join(info["pth_files"]) or (
            f"not installed in {args.site_dir}" if args.site_dir else "not installed")
        print(f"start-up hook (.pth): {where}")
        if info["pth_installed"] and not info["pth_current"]:
            print("  (out of date: run `inductor-sm-override hook install`)")
        print(f"python: {info['python']}")
        if not info["variables"]:
            print("variables: none set (the override is off; the hook costs nothing)")
        for name, value in info["variables"].items():
            print(f"variable: {name}={value}")
        if info["near_misses"]:
            print(f"warning: {near_miss_line(info['near_misses'])}")
        if info["error"]:
            print(f"error: {info['error']}")
            return 1  # a bad variable: the override stays off, say so in the exit status
        print(f"override from environment: {'on' if info['enabled'] else 'off'}")
        if info["settings"]:
            print(f"settings: {info['settings']}")
        return 0
    directory = Path(args.site_dir) if args.site_dir else launcher.site_dirs()[0]
    try:
        done = (launcher.install_pth if args.action == "install" else
                launcher.uninstall_pth)(directory)
    except PermissionError as exc:
        print(f"inductor-sm-override hook {args.action}: refused: {exc} "
              "(use a virtual environment you own, or --site-dir)", file=sys.stderr)
        return 1
    print(done)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    import torch

    try:  # up front: one line now, not a traceback after the warm-up compile
        Path(args.out).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = "a file, not a folder" if Path(args.out).is_file() else exc.strerror or exc
        print(f"inductor-sm-override demo: --out {args.out}: {why}", file=sys.stderr)
        return 2
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print("inductor-sm-override demo: --device cuda: no CUDA GPU is visible", file=sys.stderr)
        return 2
    w = demo.WORKLOADS[device]
    print(f"demo: an MLP ({w.features} -> {w.hidden} -> {w.features}, {w.dtype}, batch "
          f"{w.batch}) on {device}, compiled three ways with "
          'mode="max-autotune-no-cudagraphs", each in a fresh Inductor cache:')
    print(f"  plain = torch alone; override = iso.override(); capped = "
          f"iso.override(max_choices={demo.CAP})")
    if device == "cpu":
        print("  on a CPU Inductor offers its C++ GEMM template only for frozen weights: the "
              "demo sets torch._inductor.config.freezing = True and torch.no_grad() for its "
              "own compiles (about 1-2 minutes on 2 cores)")
    try:
        result = demo.run_demo(device, args.out,
                          progress=lambda line: print(f"  {line}", flush=True))
    except demo.DemoError as exc:
        print(f"inductor-sm-override demo: {exc}", file=sys.stderr)
        return 1
    print()
    print(verdict.format_comparison(result))
    print()
    print(f"verdict ({result.machine}, torch {result.torch_version}):")
    for line in verdict.verdict(result):
        print(f"- {line}")
    for path in (m.report for m in result.modes if m.report):
        print(f"each GEMM's decision: inductor-sm-override report {path}")
    return 0 if all(m.passed for m in result.modes) else 1


def _cmd_doctor(args: argparse.Namespace) -> int:

    info = doctor.collect(args.min_sms)
    print(json.dumps(info, indent=2, default=str) if args.json else doctor.format_text(info))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:

    def fail(message: str) -> int:
        print(f"inductor-sm-override report: {message}", file=sys.stderr)
        return 2

    if args.plot and not Path(args.plot).resolve().parent.is_dir():
        return fail(f"cannot write the plot {args.plot}: "
                    f"{Path(args.plot).resolve().parent} is not an existing folder")
    try:
        events, errors = report.read_events(args.log)
    except OSError as exc:
        return fail(f"cannot read {args.log}: {exc.strerror or exc}")
    if not events:  # one line, not one per line
        return fail(f"{args.log} is not a JSONL report: no report event in it (first "
                    f"problem: {errors[0]})" if errors else
                    f"{args.log} has no report event (the file is empty)")
    if errors:
        print("inductor-sm-override report: " + (
            f"1 line skipped: {errors[0]}" if len(errors) == 1
            else f"{len(errors)} lines skipped (first: {errors[0]})"), file=sys.stderr)
    summary = report.summarize(events)
    text = json.dumps(summary, indent=2, default=str) if args.json else \
        report.format_table(summary)
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"  # odd characters escaped
    print(text.encode(encoding, "backslashreplace").decode(encoding))
    if args.plot:
        try:
            report.plot(events, args.plot)
        except ImportError:
            return fail("--plot needs matplotlib: pip install 'inductor-sm-override[plot]'")
        except OSError as exc:
            return fail(f"cannot write the plot {args.plot}: {exc.strerror or exc}")
        print(f"plot: {args.plot}", file=sys.stderr)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:

    print(json.dumps(status(), indent=2, default=str))
    return 0


def _add_run(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser(
        "run", help="run a command with the override switched on through the environment",
        description="Set INDUCTOR_SM_OVERRIDE=1 and the variables for the given options, "
        "then exec CMD (its exit status and signals are passed through). "
        "Example: inductor-sm-override run --min-sms 40 -- torchrun train.py",
    )
    run.add_argument("--min-sms", type=_setting("min_sms", int), metavar="N",
                     help="SM threshold: a GPU with at least N streaming multiprocessors "
                     "counts as big enough for Triton GEMM templates (default: 0, any GPU)")
    run.add_argument("--max-choices", type=_setting("max_choices", int), metavar="N",
                     help="benchmark at most N template choices per GEMM, best-ranked first; "
                     "the ATen fallback is always kept on top (default: no cap)")
    run.add_argument("--budget-s", type=_setting("budget_s", float), metavar="SECONDS",
                     help="wall-clock autotuning budget in seconds for the whole process; "
                     "once spent, further GEMMs keep only the fallback (default: no budget)")
    run.add_argument("--no-verify", action="store_true",
                     help="do not check each template choice's output against a reference "
                     "before its timing counts (default: verify)")
    run.add_argument("--rtol", type=_setting("rtol", float), metavar="X",
                     help="relative tolerance of the checks (default: per dtype, see "
                     "SAFETY.md; e.g. 1e-2 for float32)")
    run.add_argument("--atol", type=_setting("atol", float), metavar="X",
                     help="absolute tolerance of the checks (default: per dtype, relative "
                     "to the reference's RMS, see SAFETY.md)")
    run.add_argument("--report", metavar="PATH", type=_report_path,
                     help="append JSONL decision events to PATH; {rank} and {pid} are "
                     "replaced (default: no report)")
    run.add_argument("--simulate-sms", type=_setting("simulate_sms", int), metavar="N",
                     help="make Inductor believe the GPU has N SMs (research: what would a "
                     "smaller part pick?) (default: the real count)")
    run.add_argument("--search-space", type=_setting("search_space", str),
                     metavar="DEFAULT|EXHAUSTIVE", help="Inductor's "
                     "max_autotune_gemm_search_space, any case (default: Inductor's)")
    run.add_argument("--strict", action="store_true",
                     help="fail (raise at Inductor import) on an unsupported torch or a bad "
                     "variable instead of warning and leaving torch unpatched")
    run.add_argument("--quiet", action="store_true",
                     help="no progress line per autotuned op on stderr (default: one line "
                     "per op when stderr is a terminal)")
    run.add_argument("--require-manifest", action="store_true",
                     help="a cache hit whose manifest is missing, corrupted or from another "
                     "device, SM count or settings is compiled and checked here instead of "
                     "being loaded unverified (default: loaded, reported unverified)")
    run.add_argument("--fleet", type=_setting("fleet", str), metavar="node|job",
                     help="share autotune decisions (torchrun/SLURM): local rank 0 of each node "
                     "(node) or rank 0 of the job (job) tunes each GEMM, the other ranks "
                     "check its pick and run it (default: every rank autotunes)")
    run.add_argument("--fleet-timeout-s", type=_setting("fleet_timeout_s", float),
                     metavar="SECONDS",
                     help="how long a rank waits for its leader's decision, per op, before "
                     "autotuning it itself (default: 600)")
    run.add_argument("command", nargs=argparse.REMAINDER,
                     help="-- CMD ARGS: the command to run (after --)")
    run.set_defaults(func=_cmd_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inductor-sm-override",
        description="Triton GEMM templates for torch.compile max-autotune on mid-size GPUs.",
    )
    sub = parser.add_subparsers(dest="name", metavar="COMMAND", title="commands")
    parser.commands = sub.choices  # type: ignore[attr-defined]  # name -> its parser
    _add_run(sub)
    hook = sub.add_parser(
        "hook", help="the environment-variable start-up hook (.pth)",
        description="The start-up hook is a .pth file in site-packages that, at interpreter "
        "start, arranges for the INDUCTOR_SM_OVERRIDE* variables to switch the override on "
        "when torch's Inductor is imported (torch itself is not imported early). "
        "status: where the hook is, the variables and what they give (exit status 1 if a "
        "variable is invalid); install / uninstall: add or remove the .pth file.")
    hook.add_argument("action", choices=["status", "install", "uninstall"], type=str.lower,
                      help="status, install or uninstall")
    hook.add_argument("--site-dir", help="site directory for status/install/uninstall "
                      "(default: this interpreter's site-packages)")
    hook.add_argument("--json", action="store_true", help="status as JSON")
    hook.set_defaults(func=_cmd_hook)
    demo_cmd = sub.add_parser("demo", help="compile one model plain, with the override and capped, "
                          "and compare",
                          description="Compile a small MLP with mode=max-autotune-no-cudagraphs "
                          "three ways (plain torch, iso.override(), iso.override(max_choices="
                          "8)), each in a fresh Inductor cache; compare compile time, run time "
                          "and error against float64, and say what it means on this machine. "
                          "Exit status 1 if a mode failed to compile or computed a wrong "
                          "result.")
    demo_cmd.add_argument("--device", choices=["cpu", "cuda"], default=None, type=str.lower,
                      help="default: cuda when a GPU is visible, else cpu")
    demo_cmd.add_argument("--out", default="runs", help="folder for the reports (default: runs)")
    demo_cmd.set_defaults(func=_cmd_demo)
    doctor_cmd = sub.add_parser("doctor", help="versions, support, GPUs and what the gate says",
                            description="Report torch/triton/python versions and support, "
                            "every GPU with its SMs and the gate's answer (torch's, with the "
                            "override, and at --min-sms), the binding sites, the start-up "
                            "hook, the INDUCTOR_SM_OVERRIDE* variables, and Inductor config.")
    doctor_cmd.add_argument("--json", action="store_true",
                        help="everything as one JSON object (for scripts and bug reports)")
    doctor_cmd.add_argument("--min-sms", type=_setting("min_sms", int), default=None, metavar="N",
                        help="also show the gate's answer for each GPU with min_sms=N, i.e. "
                        "what iso.override(min_sms=N) would decide (N >= 0)")
    doctor_cmd.set_defaults(func=_cmd_doctor)
    report_cmd = sub.add_parser("report", help="summarize a JSONL decision log",
                            description="A table per autotuned op (winner, best template vs "
                            "extern time and speed-up, choices run/capped/rejected, seconds) "
                            "and totals, each rejected choice with its reason. Lines that are "
                            "not report events are skipped and counted in one line; a file "
                            "with no report event is one error line (exit status 2).")
    report_cmd.add_argument("log", metavar="LOG",
                        help="a JSONL report written by report=... or "
                        "INDUCTOR_SM_OVERRIDE_REPORT")
    report_cmd.add_argument("--json", action="store_true",
                        help="per-op summaries and totals as JSON instead of the table")
    report_cmd.add_argument("--plot", metavar="OUT.png", help="timings per op (needs matplotlib)")
    report_cmd.set_defaults(func=_cmd_report)
    stat = sub.add_parser("status", help="print iso.status() as JSON")
    stat.set_defaults(func=_cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.name is None and not unknown:  # the bare command: show what it can do
        parser.print_help(sys.stderr)
        return 2
    if unknown:  # the usage of the command given, not the top-level one
        parser.commands.get(args.name, parser).error(
            f"unrecognized arguments: {' '.join(unknown)}")
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        with contextlib.suppress(OSError, ValueError, AttributeError):  # a real file only
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
