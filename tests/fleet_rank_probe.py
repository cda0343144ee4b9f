"""One rank of a fleet job, run by test_fleet_torchrun.py and benchmarks/fleet_compile.py
under ``torch.distributed.run`` (CPU): compile an autotuned model, write what happened.

    python -m torch.distributed.run --standalone --nproc_per_node=2 \
        fleet_rank_probe.py OUT_DIR '<spec JSON>'

spec (all optional):
  "entry": "override" (iso.override(**settings), the default), "compile" (iso.compile(...,
           **settings)) or "env" (no block: the INDUCTOR_SM_OVERRIDE* variables of the job);
  "settings": override settings (fleet, fleet_timeout_s, report ...);
  "cache": "per_rank" (TORCHINDUCTOR_CACHE_DIR/rank<r>: a hit can only come from Redis) or
           "shared" (one local cache dir for the node: the default);
  "init": "before" (init_process_group before the compile), "after" (the default) or
          "file" (init with a FileStore under OUT_DIR, outside torchrun's agent store:
          the default process group's store is the only one);
  "fail_leader": the leader's compile raises (Inductor's codegen, after the cache lookup);
  "shape_by_rank": each rank compiles its own batch size (the graphs differ);
  "width", "depth", "batch": the MLP (Linear + GELU; default 32 wide, 1 GEMM, batch 8).

The model: frozen weights, no_grad, mkldnn packing off, so that on the CPU Inductor
really autotunes each GEMM (C++ template vs ATen addmm) and the graph stays cacheable.
Each rank writes rank<r>.json: the output check, decisions, cache hits, fleet events,
Inductor's FX-graph-cache counters, the compile's wall-clock span (start after a barrier).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

OUT = Path(sys.argv[1])
SPEC = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
RANK = int(os.environ.get("RANK", "0"))
if SPEC.get("cache") == "per_rank":  # before torch reads it
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(
        os.environ["TORCHINDUCTOR_CACHE_DIR"], f"rank{RANK}")
if SPEC.get("init") == "file":  # the default process group's store, not torchrun's
    os.environ.pop("TORCHELASTIC_USE_AGENT_STORE", None)

import torch  # noqa: E402
import torch._inductor.config as inductor_config  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402

import inductor_sm_override as iso  # noqa: E402


def _init() -> None:
    if SPEC.get("init") == "file":
        dist.init_process_group("gloo", init_method=f"file://{OUT / 'pg-store'}",
                                rank=RANK, world_size=int(os.environ["WORLD_SIZE"]))
    else:
        dist.init_process_group("gloo")


def _fail_leader() -> None:
    """The leader's compile raises after its lookup: Inductor's code generation fails."""
    import torch._inductor.compile_fx as compile_fx

    def broken(*args, **kwargs):
        raise RuntimeError("injected leader failure")

    compile_fx.fx_codegen_and_compile = broken


def _model() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    width, depth = SPEC.get("width", 32), SPEC.get("depth", 1)
    layers: list[torch.nn.Module] = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.GELU()]
    batch = SPEC.get("batch", 8) + (8 * RANK if SPEC.get("shape_by_rank") else 0)
    return torch.nn.Sequential(*layers).eval(), torch.randn(batch, width)


def _compile(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor | None, str]:
    entry, settings = SPEC.get("entry", "override"), SPEC.get("settings", {})
    try:
        if entry == "compile":
            compiled = iso.compile(model, example_inputs=(x,), **settings)
            return compiled(x), getattr(compiled, "used", "?")
        compiled = torch.compile(model, mode="max-autotune-no-cudagraphs")
        if entry == "env":
            return compiled(x), "env"
        with iso.override(**settings):
            return compiled(x), "override"
    except Exception as exc:  # the injected leader failure: recorded, the rank goes on
        return None, f"{type(exc).__name__}: {str(exc)[:300]}"


def main() -> None:
    if SPEC.get("init") in ("before", "file"):
        _init()
    if SPEC.get("fail_leader") and RANK == 0:
        _fail_leader()
    model, x = _model()
    if dist.is_initialized():
        dist.barrier()  # both ranks start compiling together
    started = time.time()
    with torch.no_grad(), inductor_config.patch(freezing=True), \
            torch.backends.mkldnn.flags(enabled=False):
        out, used = _compile(model, x)
    finished = time.time()
    with torch.no_grad():
        ok = out is not None and bool(torch.allclose(out, model(x), rtol=1e-4, atol=1e-4))
    result = {
        "rank": RANK, "pid": os.getpid(), "ok": ok, "used": used,
        "started": started, "finished": finished,
        "hit": counters["inductor"]["fxgraph_cache_hit"],
        "miss": counters["inductor"]["fxgraph_cache_miss"],
        "decisions": iso.decisions(), "hits": iso.cache_hits(),
        "fleet": iso.fleet_events(),
    }
    (OUT / f"rank{RANK}.json").write_text(json.dumps(result, default=str))
    if not dist.is_initialized():
        _init()
    dist.barrier()  # neither rank leaves (taking torchrun's store with it) before both wrote
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
