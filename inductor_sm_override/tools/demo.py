"""``inductor-sm-override demo``: one model compiled three ways, measured side by side.

Modes: **plain** (``torch.compile(mode="max-autotune-no-cudagraphs")``, no toolkit), the
**override** (``iso.override()``: templates allowed, every one verified) and **capped**
(``iso.override(max_choices=8)``). Each compiles cold (a fresh Inductor cache, its own
entry point), so compile times compare; run times are taken in interleaved rounds; every
output is compared with a float64 evaluation of the model, as eager's is. The verdict is
written by :mod:`.demo_verdict`.

On a CPU Inductor offers its C++ GEMM template only for frozen weights, so the demo's
compiles run with ``torch._inductor.config.freezing = True`` under ``torch.no_grad()``
(for its own compiles only). On a GPU the model is fp16 and larger.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import platform
import statistics
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..api.block import override
from ..checks import outputs
from ..core import events
from ..core.records import clear_decisions, decisions
from .quiet import torch_autotune_output_hidden

CAP = 8  # max_choices of the capped mode: the setting the docs recommend
MODES: dict[str, dict[str, Any] | None] = {
    "plain": None,  # no override block at all: what torch does on its own
    "override": {},
    "capped": {"max_choices": CAP},
}
ROUNDS = 5  # interleaved timing rounds (their spread is the noise)
_ids = itertools.count()


class DemoError(RuntimeError):
    """The demo cannot run on this machine (torch itself fails to compile); one line."""


MAX_ERROR_CHARS = 160


def _first_line(exc: BaseException) -> str:
    """Type and first line of the innermost cause that says it briefly (dynamo wraps
    Inductor's errors; the innermost may be a subprocess error quoting a whole command)."""
    chain, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).strip().splitlines()
        chain.append(f"{type(current).__name__}: {text[0] if text else ''}".rstrip(": "))
        current = getattr(current, "inner_exception", None) or current.__cause__
    brief = [line for line in chain if len(line) <= MAX_ERROR_CHARS]
    return brief[-1] if brief else chain[0][:MAX_ERROR_CHARS] + "..."


@dataclasses.dataclass(frozen=True)
class Workload:
    """The demo model's size and dtype on one device."""

    device: str
    batch: int
    features: int
    hidden: int
    dtype: str  # "float32" / "float16"
    calls: int  # calls per timing round


WORKLOADS = {
    "cpu": Workload("cpu", batch=64, features=256, hidden=512, dtype="float32", calls=50),
    "cuda": Workload("cuda", batch=256, features=1024, hidden=4096, dtype="float16",
                     calls=100),
}


@dataclasses.dataclass
class ModeResult:
    """One mode's compile, run and check."""

    mode: str
    settings: dict[str, Any] | None
    compile_s: float
    run_ms: float = float("nan")
    spread: float = 0.0  # (slowest - fastest round) / median round
    max_abs: float | None = None  # vs the fp64 reference
    passed: bool = False
    reason: str = ""
    decisions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    report: str | None = None
    recompiled: bool = False  # dynamo compiled again while timed (timings then mean less)
    error: str = ""  # the compile failed: the exception's first line

    @property
    def compiled(self) -> bool:
        return not self.error

    @property
    def autotuned(self) -> int:
        return len(self.decisions)

    def count(self, key: str) -> int:
        return sum(len(d.get(key) or ()) for d in self.decisions)

    @property
    def templates_run(self) -> int:
        return sum(1 for d in self.decisions for name, ms in (d.get("timings") or {}).items()
                   if ms is not None and name not in (d.get("externs") or ()))

    @property
    def template_wins(self) -> int:
        return sum(1 for d in self.decisions
                   if d.get("winner") and d["winner"] not in (d.get("externs") or ()))


@dataclasses.dataclass
class DemoResult:
    """Everything the comparison table and the verdict need."""

    workload: Workload
    machine: str
    sms: int | None
    torch_version: str
    eager_max_abs: float | None
    gate: dict[str, Any] | None  # the gate's decision seen in the override modes (GPU)
    modes: list[ModeResult]

    def mode(self, name: str) -> ModeResult:
        return next(m for m in self.modes if m.mode == name)


def demo_model(features: int = 256, hidden: int = 512) -> Any:
    """A plain-torch MLP (no torchvision): two GEMMs and an activation."""
    import torch

    return torch.nn.Sequential(
        torch.nn.Linear(features, hidden),
        torch.nn.GELU(),
        torch.nn.Linear(hidden, features),
    )


def _entry_point(model: Any, label: str) -> Callable[..., Any]:
    """A function calling ``model`` with a code object of its own, so each mode's compile is
    cached by dynamo apart from the others (no reset needed, none disturbed)."""

    def call(x: Any) -> Any:
        return model(x)

    name = f"iso_demo_{label}_{next(_ids)}"
    changes: dict[str, Any] = {"co_name": name}
    if hasattr(call.__code__, "co_qualname"):
        changes["co_qualname"] = name
    return types.FunctionType(call.__code__.replace(**changes), call.__globals__, name, None,
                              call.__closure__)


@contextlib.contextmanager
def _cold_cache() -> Iterator[None]:
    """A fresh Inductor (and Triton) cache on disk and in memory for one mode's compile."""
    from torch._inductor import utils

    fresh = getattr(utils, "fresh_cache", None) or getattr(utils, "fresh_inductor_cache", None)
    with fresh() if fresh else contextlib.nullcontext():
        yield


def _compile_context(workload: Workload, plain: bool = True) -> contextlib.ExitStack:
    """no_grad, frozen weights on a CPU; torch's autotune output hidden for plain compiles
    (the override modes compile with quiet=True, which hides it)."""
    import torch
    import torch._inductor.config as inductor_config

    stack = contextlib.ExitStack()
    stack.enter_context(torch.no_grad())
    if plain:
        stack.enter_context(torch_autotune_output_hidden())
    if workload.device == "cpu":  # the C++ GEMM template is offered for frozen weights only
        stack.enter_context(inductor_config.patch(freezing=True))
    return stack


def _graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _compile_mode(name: str, settings: dict[str, Any] | None, model: Any, x: Any,
                  workload: Workload, out_dir: Path | None) -> tuple[ModeResult, Any, Any]:
    import torch

    report = None
    if settings is not None and out_dir is not None:
        report = str(out_dir / f"demo-{workload.device}-{name}.jsonl")
        Path(report).unlink(missing_ok=True)
    clear_decisions()
    compiled = torch.compile(_entry_point(model, name), mode="max-autotune-no-cudagraphs")
    with _cold_cache(), _compile_context(workload, plain=settings is None):
        block = (contextlib.nullcontext() if settings is None
                 else override(**settings, report=report, quiet=True))
        started = time.perf_counter()
        with block:
            out = compiled(x)
            if workload.device == "cuda":
                torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    result = ModeResult(name, settings, round(seconds, 2), report=report,
                        decisions=list(decisions()) if settings is not None else [])
    return result, compiled, out


def _warm_up(workload: Workload) -> float:
    """One uncounted max-autotune compile of a tiny Linear first (fresh cache): the
    process's one-time costs (Inductor's and the autotuner's imports, the C++ toolchain
    probe, CUDA/Triton start-up) would otherwise be charged to whichever mode compiles
    first."""
    import torch

    dtype = getattr(torch, workload.dtype)
    tiny = torch.nn.Linear(16, 16).to(device=workload.device, dtype=dtype).eval()
    x = torch.randn(16, 16, device=workload.device, dtype=dtype)
    started = time.perf_counter()
    with _cold_cache(), _compile_context(workload):
        torch.compile(_entry_point(tiny, "warmup"), mode="max-autotune-no-cudagraphs")(x)
    return time.perf_counter() - started


def _time_modes(fns: dict[str, Callable[[], Any]], workload: Workload,
                sync: Callable[[], None]) -> dict[str, tuple[float, float]]:
    """Median ms per call of each function, in interleaved rounds; and each one's spread."""
    rounds: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm-up
        fn()
    sync()
    for _ in range(ROUNDS):
        for name, fn in fns.items():
            started = time.perf_counter()
            for _ in range(workload.calls):
                fn()
            sync()
            rounds[name].append((time.perf_counter() - started) * 1e3 / workload.calls)
    out = {}
    for name, samples in rounds.items():
        median = statistics.median(samples)
        out[name] = (median, (max(samples) - min(samples)) / median if median else 0.0)
    return out


def _machine(device: str) -> tuple[str, int | None]:
    import os

    import torch

    if device == "cuda":
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        return props.name, props.multi_processor_count
    return f"{platform.machine()} CPU, {os.cpu_count()} cores", None


def run_demo(device: str = "cpu", out_dir: str | Path | None = "runs",
             progress: Callable[[str], None] | None = None,
             modes: dict[str, dict[str, Any] | None] | None = None) -> DemoResult:
    """Compile the demo model in every mode of ``modes`` (default :data:`MODES`), time the
    compiled functions side by side and check each output against float64.

    Reports of the override modes go to ``out_dir`` (None: no reports). ``progress`` gets
    one line per finished step.
    """
    import torch


    say = progress or (lambda line: None)
    workload = WORKLOADS[device]
    out_path = Path(out_dir) if out_dir is not None else None
    if out_path is not None:
        out_path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    dtype = getattr(torch, workload.dtype)
    model = demo_model(workload.features, workload.hidden).to(device=device, dtype=dtype).eval()
    x = torch.randn(workload.batch, workload.features, device=device, dtype=dtype)
    with torch.no_grad():
        eager = model(x)
        reference = copy.deepcopy(model).double()(x.double())
    eager_err = outputs.compare_trees(eager, reference).max_abs
    try:
        say(f"warm-up compile of a tiny Linear (not counted): {_warm_up(workload):.1f} s")
    except Exception as exc:
        raise DemoError(f"torch {torch.__version__} cannot compile even a tiny Linear with "
                        f"max-autotune on {device} here, without the override: "
                        f"{_first_line(exc)} (a torch problem: see docs/versions.md, "
                        "'Known torch problems')") from exc
    gates: list[dict[str, Any]] = []

    def on_gate(event: dict[str, Any]) -> None:
        if event.get("event") == "gate":
            gates.append(event)

    events.listeners.append(on_gate)
    results: list[ModeResult] = []
    compiled: dict[str, Any] = {}
    try:
        for name, settings in (modes if modes is not None else MODES).items():
            started = time.perf_counter()
            try:
                result, fn, out = _compile_mode(name, settings, model, x, workload, out_path)
            except Exception as exc:  # torch's own failure: say it, go on with the others
                result = ModeResult(name, settings, round(time.perf_counter() - started, 2),
                                    error=_first_line(exc), reason="the compile failed")
                results.append(result)
                say(f"{name}: compile FAILED after {result.compile_s:.1f} s: {result.error}")
                continue
            check = outputs.compare_trees(out, reference, eager=eager, eager_factor=4.0)
            result.max_abs, result.passed, result.reason = check.max_abs, check.passed, \
                check.reason
            results.append(result)
            compiled[name] = fn
            say(f"{name}: compiled in {result.compile_s:.1f} s")
    finally:
        events.listeners.remove(on_gate)
    if compiled:
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        before = _graphs()
        with _compile_context(workload):
            timings = _time_modes({n: (lambda f=f: f(x)) for n, f in compiled.items()},
                                  workload, sync)
        recompiled = _graphs() != before
        for result in results:
            if result.compiled:
                result.run_ms, result.spread = timings[result.mode]
                result.recompiled = recompiled
        say(f"timed: {ROUNDS} interleaved rounds of {workload.calls} calls per mode")
    machine, sms = _machine(device)
    return DemoResult(workload, machine, sms, torch.__version__, eager_err,
                      gates[-1] if gates else None, results)
