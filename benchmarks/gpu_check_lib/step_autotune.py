"""Step 3: the autotune cost of one GEMM: EXHAUSTIVE capped by ``budget_s`` vs
``max_choices=8``, verify on and off (the verify overhead)."""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Any

from .cases import GATE_SMS, MODE, Case, build_case
from .measure import (
    Emulation,
    cold_cache,
    fp64_reference,
    frames_compiled,
    gpu_time_ms,
    inductor_patches,
    rel_error,
    summarize_events,
)

if TYPE_CHECKING:
    from .run import Run


def step_autotune_cost(run: Run) -> None:
    import torch

    emulation = Emulation(run)
    emulation.probe()
    m, n, k = run.sizes.cost_gemm
    case = Case("cost", f"gemm {m}x{n}x{k}", "gemm", (m, n, k), {})
    model, inputs = build_case(case, run.device, getattr(torch, run.sizes.dtype))
    ref = fp64_reference(model, inputs)
    budget = run.args.exhaustive_budget_s or run.sizes.cost_budget_s
    modes = {
        "gated": emulation.settings(min_sms=GATE_SMS, verify=False),
        "exhaustive+budget": emulation.settings(search_space="EXHAUSTIVE", budget_s=budget,
                                                verify=True),
        "exhaustive cap8+verify": emulation.settings(search_space="EXHAUSTIVE",
                                                     max_choices=8, verify=True),
        "exhaustive cap8 no-verify": emulation.settings(search_space="EXHAUSTIVE",
                                                        max_choices=8, verify=False),
    }
    for mode, settings in modes.items():
        row = run.part(run.sizes.cost_estimate_s[mode], f"step 3 {mode}", compile_and_time,
                       run, emulation, model, inputs, ref, settings, "autotune", mode)
        if row is None:
            continue
        row = {"case": case.label, "mode": mode, "settings": settings, **row}
        if "offered" in row:
            offered_templates = max(row["offered"] - row.get("externs", 0), 0)
            row["reached"] = f"{row['templates_benchmarked']} of {offered_templates} templates"
        run.results["autotune_cost"].append(row)
        run.log(f"step 3: {mode:26s} " + (
            f"{row['ms']:.4f} ms, autotune {row['autotune_s']:.1f} s, compile "
            f"{row['compile_s']:.1f} s, {row.get('reached', '')}, winner {row['winner']}"
            if "ms" in row else f"ERROR {row['error']}"))
        run.save()


def compile_and_time(run: Run, emulation: Emulation, model: Any, inputs: tuple, ref: Any,
                     settings: dict[str, Any], step: str, mode: str) -> dict[str, Any]:
    """Compile cold under ``settings`` and the emulation; time; check; summarize decisions."""
    import torch
    import torch._inductor.config as config

    import inductor_sm_override as iso

    iso.clear_decisions()
    with cold_cache(run), torch.no_grad(), warnings.catch_warnings(record=True), \
            config.patch(inductor_patches(run, fx_graph_cache=False)), emulation.limit():
        fn = torch.compile(model, mode=MODE, dynamic=False)
        started = time.perf_counter()
        with iso.override(**settings):
            out = fn(*inputs)
        compile_s = time.perf_counter() - started
        events = iso.decisions()
        frames_before = frames_compiled()
        ms, spread = gpu_time_ms(lambda: fn(*inputs), run.device, run.sizes.bench_rep_ms)
        recompiled = frames_compiled() - frames_before
    run.decisions(step, "cost", mode, events)
    facts = summarize_events(events)
    externs = sum(len(e.get("externs", ())) for e in events)
    templates_run = sum(1 for e in events for name, t in e.get("timings", {}).items()
                        if t is not None and name not in e.get("externs", ()))
    return {"ms": round(ms, 5), "spread": round(spread, 4), "compile_s": round(compile_s, 3),
            "rel_err_fp64": rel_error(out, ref), "externs": externs,
            "recompiled_while_timed": recompiled,
            "templates_benchmarked": templates_run, **facts}


