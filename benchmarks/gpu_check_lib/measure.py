"""What the steps share: timing, errors against fp64, kernels in generated code, decision
summaries, cold caches, the 46-SM emulation and Inductor's counters."""

from __future__ import annotations

import contextlib
import copy
import re
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from _common import median_ms

from .cases import EMULATED_SMS

if TYPE_CHECKING:
    from .run import Run


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


def inductor_patches(run: Run, fx_graph_cache: bool, model: bool = False) -> dict[str, Any]:
    patches = {"fx_graph_cache": fx_graph_cache, "autotune_local_cache": False,
               "freezing": run.device == "cpu"}
    if model and run.sizes.model_gemm_backends:
        patches["max_autotune_gemm_backends"] = run.sizes.model_gemm_backends
    return patches


def fx_cache_hits() -> int:
    return counter("inductor", "fxgraph_cache_hit")


def frames_compiled() -> int:
    return counter("frames", "ok")


def counter(group: str, name: str) -> int:
    try:
        from torch._dynamo.utils import counters

        return int(counters[group][name])
    except Exception:
        return 0


def stage_check(check: Any) -> dict[str, Any]:
    """The fields of one of iso.compile's stage checks that the summary needs."""
    fields = ("stage", "passed", "time_ms", "seconds", "reason")
    return {k: getattr(check, k, None) for k in fields}


