"""Step 2: the 46-SM emulation (``limit_sms`` for timings, ``simulate_sms`` for decisions)
of fp16 GEMMs and transformer blocks in four modes: gated, forced + verify, max_choices=8 +
verify, ``prefer="fastest"``."""

from __future__ import annotations

import contextlib
import time
import warnings
from typing import TYPE_CHECKING, Any

from .cases import GATE_SMS, MODE, MODES, Case, build_case
from .measure import (
    Emulation,
    cold_cache,
    fp64_reference,
    frames_compiled,
    fx_cache_hits,
    gpu_time_ms,
    inductor_patches,
    kernels_in_code,
    rel_error,
    stage_check,
    summarize_events,
)

if TYPE_CHECKING:
    from .run import Run


def step_emulation(run: Run) -> None:
    import torch

    import inductor_sm_override as iso

    emulation = Emulation(run)
    emulation.probe()
    dtype = getattr(torch, run.sizes.dtype)
    cases = [c for c in run.sizes.cases if not run.args.cases or c.key in run.args.cases]
    for index, case in enumerate(cases):
        if not run.fits(min(case.estimate_s.values()) + case.estimate_s["forced+verify"],
                        f"step 2 case {case.label} (and {len(cases) - index - 1} after it)"):
            run.results["skipped"].extend(f"step 2 case {c.label}" for c in cases[index + 1:])
            break
        model, inputs = build_case(case, run.device, dtype)
        ref = fp64_reference(model, inputs)
        rows: dict[str, dict[str, Any]] = {}
        # forced first in its own cold cache; then gated, cap8 and fastest share one, so
        # "fastest" finds the gated and cap8 graphs in the FX graph cache (same settings)
        for group in (["forced+verify"], ["gated", "cap8+verify", "fastest"]):
            with cold_cache(run):
                for mode in group:
                    row = run.part(case.estimate_s[mode], f"step 2 {case.label} {mode}",
                                   emulation_mode, run, emulation, case, model, inputs, ref,
                                   mode)
                    if row is None:
                        continue
                    rows[mode] = {"case": case.label, "key": case.key, "kind": case.kind,
                                  "mode": mode, "sms": emulation.sms,
                                  "sms_limited": emulation.limited, **row}
        gated = rows.get("gated", {}).get("ms")
        for mode in MODES:
            if mode not in rows:
                continue
            row = rows[mode]
            if gated and row.get("ms"):
                row["speedup_vs_gated"] = round(gated / row["ms"], 4)
                row["noise"] = round(max(0.02, rows["gated"].get("spread", 0)
                                         + row.get("spread", 0)), 4)
            run.results["rows"].append(row)
            run.log("step 2: " + row_line(row))
        del model, inputs, ref
        if run.device == "cuda":
            torch.cuda.empty_cache()
        run.save(plot=True)
    iso.clear_decisions()


def emulation_mode(run: Run, emulation: Emulation, case: Case, model: Any, inputs: tuple,
                   ref: Any, mode: str) -> dict[str, Any]:
    """Compile one case in one mode under the emulation; time it; check it against fp64."""
    import torch
    import torch._inductor.config as config
    from torch._inductor.utils import run_and_get_code

    import inductor_sm_override as iso

    # every mode starts from the 46-SM world (the gate says no); the override modes lift the
    # gate in a block nested inside it, as iso.compile's "override" stage does in "fastest"
    # (the same nesting gives the same FX-graph-cache salt: "fastest" re-uses cap8's graph)
    gated = emulation.settings(min_sms=GATE_SMS, verify=False)
    lift = {"forced+verify": emulation.settings(min_sms=0, verify=True),
            "cap8+verify": emulation.settings(min_sms=0, max_choices=8, verify=True)}
    iso.clear_decisions()
    torch._dynamo.reset()
    hits_before = fx_cache_hits()
    result: dict[str, Any] = {}
    with warnings.catch_warnings(record=True) as caught, torch.no_grad(), \
            config.patch(inductor_patches(run, True, case.is_model)), emulation.limit():
        started = time.perf_counter()
        if mode == "fastest":
            # iso.compile's "plain" stage is what the 46-SM part gets (the outer block)
            with iso.override(**gated):
                compiled = iso.compile(model, inputs, prefer="fastest",
                                       compile_kwargs={"dynamic": False},
                                       **lift["cap8+verify"])
            out = compiled(*inputs)
            fn: Any = compiled
            result["used"] = compiled.used
            result["checks"] = [stage_check(c) for c in getattr(compiled, "checks", ())]
        else:
            fn = torch.compile(model, mode=MODE, dynamic=False)
            inner = iso.override(**lift[mode]) if mode in lift else contextlib.nullcontext()
            with iso.override(**gated), inner:
                out, codes = run_and_get_code(fn, *inputs)
            result["code_templates"], result["code_externs"] = (
                " ".join(k) for k in kernels_in_code(codes))
            result["used"] = mode
        result["compile_s"] = round(time.perf_counter() - started, 3)
        result["fx_cache_hits"] = fx_cache_hits() - hits_before
        events = iso.decisions()
        frames_before = frames_compiled()
        ms, spread = gpu_time_ms(lambda: fn(*inputs), run.device, run.sizes.bench_rep_ms)
        # timed outside the blocks: the compiled code must be what the block produced
        result["recompiled_while_timed"] = frames_compiled() - frames_before
        if mode == "fastest" and callable(getattr(compiled, "release", None)):
            compiled.release()  # let the patches go now, not at garbage collection
    result.update(ms=round(ms, 5), spread=round(spread, 4), rel_err_fp64=rel_error(out, ref),
                  **summarize_events(events))
    result["warnings"] = sorted({str(w.message)[:160] for w in caught})[:5]
    run.decisions("emulation", case.key, mode, events)
    return result


def row_line(row: dict[str, Any]) -> str:
    head = f"{row['case']:40s} {row['mode']:14s}"
    if "ms" not in row:
        return f"{head} ERROR {row.get('error', '')}"
    speed = row.get("speedup_vs_gated")
    return (f"{head} {row['ms']:9.4f} ms  x{speed if speed is not None else float('nan'):.3f}"
            f"  compile {row['compile_s']:6.1f} s  autotune {row['autotune_s']:6.1f} s  "
            f"err {row['rel_err_fp64']:.1e}  wins {row['template_wins']}/{row['ops']}"
            + (f"  used {row['used']}" if row["mode"] == "fastest" else ""))


