"""Step 4: a training step of the MLP block under the override (forward and backward GEMM
decisions, gradients against fp64)."""

from __future__ import annotations

import copy
import time
import warnings
from typing import TYPE_CHECKING, Any

from .cases import GATE_SMS, MODE, Case, build_case
from .measure import (
    Emulation,
    cold_cache,
    frames_compiled,
    gpu_time_ms,
    inductor_patches,
    rel_error,
    summarize_events,
)

if TYPE_CHECKING:
    from .run import Run


def step_training(run: Run) -> None:
    import torch

    emulation = Emulation(run)
    emulation.probe()
    tokens, d, hidden = run.sizes.train_dims
    case = Case("train", f"MLP block training step M={tokens} ({d}/{hidden})", "mlp",
                (tokens, d, hidden), {})
    base, (x,) = build_case(case, run.device, getattr(torch, run.sizes.dtype))
    base.train()
    wide = copy.deepcopy(base).double()
    wide(x.double()).float().square().mean().backward()  # fp64 reference gradients
    ref_grads = {name: p.grad for name, p in wide.named_parameters()}
    modes = {"gated": emulation.settings(min_sms=GATE_SMS, verify=False),
             "cap8+verify": emulation.settings(max_choices=8, verify=True)}
    results: dict[str, dict[str, Any]] = {}
    for mode, settings in modes.items():
        row = run.part(run.sizes.train_estimate_s[mode], f"step 4 {mode}", training_mode,
                       run, emulation, base, x, ref_grads, settings, mode)
        if row is None:
            continue
        results[mode] = {"case": case.label, "mode": mode, **row}
    gated = results.get("gated", {}).get("ms")
    for row in results.values():
        if gated and row.get("ms"):
            row["speedup_vs_gated"] = round(gated / row["ms"], 4)
        run.results["training"].append(row)
        run.log(f"step 4: {row['mode']:12s} " + (
            f"{row['ms']:.4f} ms/step, compile {row['compile_s']:.1f} s, autotune ops: "
            f"{row['forward_ops']} forward + {row['backward_ops']} backward, grad err "
            f"{row['grad_rel_err_fp64']:.1e}" if "ms" in row else f"ERROR {row['error']}"))
    run.save()


def training_mode(run: Run, emulation: Emulation, base: Any, x: Any, ref_grads: dict,
                  settings: dict[str, Any], mode: str) -> dict[str, Any]:
    import torch
    import torch._inductor.config as config

    import inductor_sm_override as iso

    model = copy.deepcopy(base)
    linears = sum(1 for mod in model.modules() if isinstance(mod, torch.nn.Linear))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)
    iso.clear_decisions()
    patches = {**inductor_patches(run, fx_graph_cache=False), "freezing": False}
    with cold_cache(run), warnings.catch_warnings(record=True), config.patch(patches), \
            emulation.limit():
        fn = torch.compile(model, mode=MODE, dynamic=False)
        started = time.perf_counter()
        with iso.override(**settings):
            loss = fn(x).float().square().mean()
            forward_events = len(iso.decisions())
            loss.backward()
        compile_s = time.perf_counter() - started
        events = iso.decisions()
        grad_err = max(rel_error(p.grad, ref_grads[name])
                       for name, p in model.named_parameters())

        def train_step() -> None:
            optimizer.zero_grad(set_to_none=True)
            fn(x).float().square().mean().backward()
            optimizer.step()

        frames_before = frames_compiled()
        ms, spread = gpu_time_ms(train_step, run.device, run.sizes.bench_rep_ms)
        recompiled = frames_compiled() - frames_before
    run.decisions("training", "train", mode, events)
    # backward GEMMs are those past the forward's Linear layers, whenever they were compiled
    # (at the first .backward(), or eagerly with the forward where the backward is not lazy)
    backward_ops = max(len(events) - min(forward_events, linears), 0)
    return {"ms": round(ms, 5), "spread": round(spread, 4), "compile_s": round(compile_s, 3),
            "grad_rel_err_fp64": grad_err, "forward_ops": len(events) - backward_ops,
            "backward_ops": backward_ops,
            "ops_during_backward_call": len(events) - forward_events,
            "backward_decisions_present": backward_ops > 0,
            "recompiled_while_timed": recompiled, **summarize_events(events)}


