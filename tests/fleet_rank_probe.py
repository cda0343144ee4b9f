"""One rank of a fleet job, run by test_fleet_torchrun.py and benchmarks/fleet_compile.py
under ``torch.distributed.run`` (CPU, gloo): compile frozen MLPs, write what happened.

    python -m torch.distributed.run --standalone --nproc_per_node=2 \
        fleet_rank_probe.py OUT_DIR '<spec JSON>'

The model of each case: ``depth`` Linear layers (``width`` -> ``width + 8`` -> ``width + 16``
..., GELU after each), frozen weights under ``torch.no_grad()``, mkldnn on (torch's CPU default):
Inductor autotunes each GEMM (``packed_linear``: its C++ template vs MKL) and bypasses its
FX graph cache ("mkldnn tensors unpickleable"), so nothing is shared through graphs.

spec: {"cases": [case, ...], "mkldnn": true}; each case (all optional):
  "entry": "override" (``iso.override(**settings)``, the default), "backend"
           (``torch.compile(backend=iso.backend(**settings))``), "compile" (``iso.compile``)
           or "env" (no block: the job's INDUCTOR_SM_OVERRIDE* variables; "settings" then
           go into an ``iso.override`` on top of that layer when given);
  "settings": settings for the entry; "width", "depth", "batch": the MLP (32, 2, 8);
  "faults": on ranks > 0, the C++ template's output is wrong (``iso.testing.inject_faults``);
  "bogus": on rank 0, the first decision this case publishes names a choice that does not
           exist (as a corrupted store entry would).
The ranks start each case together (a barrier). rank<r>.json: per case the output check,
the wall-clock span and CPU time, the autotune decisions and the fleet events of that case.
"package": the root of another checkout of the package to import instead (the benchmark
measures the graph-level leader of an earlier commit); the probe uses only the public API.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import resource
import sys
import time
from pathlib import Path

OUT = Path(sys.argv[1])
SPEC = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
RANK = int(os.environ.get("RANK", "0"))
if SPEC.get("package"):  # before the editable install's finder can import this checkout
    sys.meta_path[:] = [f for f in sys.meta_path
                        if "editable" not in str(getattr(f, "__module__", ""))]
    sys.path.insert(0, SPEC["package"])

import torch  # noqa: E402
import torch._inductor.config as inductor_config  # noqa: E402
import torch.distributed as dist  # noqa: E402

import inductor_sm_override as iso  # noqa: E402


def _model(case: dict) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    width, depth = case.get("width", 32), case.get("depth", 2)
    dims = [width + 8 * i for i in range(depth + 1)]  # no two GEMMs of one shape
    layers: list[torch.nn.Module] = []
    for into, out in itertools.pairwise(dims):
        layers += [torch.nn.Linear(into, out), torch.nn.GELU()]
    return torch.nn.Sequential(*layers).eval(), torch.randn(case.get("batch", 8), width)


@contextlib.contextmanager
def _bogus_first_publish():
    """Rank 0's first published decision names a choice no rank offers."""
    from inductor_sm_override.fleet import engines

    real, done = engines.publish, []

    def publish(group, key, decision, skip):
        if not done:
            done.append(key)
            decision = {**decision, "choice": '["cpp_NoSuchMicroGemm", "", []]'}
        return real(group, key, decision, skip)

    engines.publish = publish
    try:
        yield
    finally:
        engines.publish = real


def _compile(case: dict, model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, str]:
    entry, settings = case.get("entry", "override"), case.get("settings")
    if entry == "compile":
        compiled = iso.compile(model, example_inputs=(x,), **(settings or {}))
        return compiled(x), getattr(compiled, "used", "?")
    if entry == "backend":
        return torch.compile(model, backend=iso.backend(**(settings or {})))(x), "backend"
    compiled = torch.compile(model, mode="max-autotune-no-cudagraphs")
    block = iso.override(**(settings or {})) if entry == "override" or settings else \
        contextlib.nullcontext()
    with block:
        return compiled(x), entry


def _cpu_s() -> float:
    """CPU seconds of this rank and of the children it waited for (the compiler's g++)."""
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def _case(case: dict) -> dict:
    model, x = _model(case)
    iso.clear_decisions()
    seen = len(iso.fleet_events())
    torch._dynamo.reset()
    with contextlib.ExitStack() as stack:
        if case.get("faults") and RANK > 0:
            stack.enter_context(iso.testing.inject_faults("cpp", "wrong"))
        if case.get("bogus") and RANK == 0:
            stack.enter_context(_bogus_first_publish())
        stack.enter_context(torch.no_grad())
        stack.enter_context(inductor_config.patch(freezing=True))
        dist.barrier()  # the ranks start this case together
        started, cpu = time.time(), _cpu_s()
        out, used = _compile(case, model, x)
        finished, cpu = time.time(), _cpu_s() - cpu
    with torch.no_grad():
        ok = bool(torch.allclose(out, model(x), rtol=1e-4, atol=1e-4))
    return {"ok": ok, "used": used, "started": started, "finished": finished,
            "cpu_s": round(cpu, 3),
            "decisions": iso.decisions(), "fleet": iso.fleet_events()[seen:]}


def main() -> None:
    dist.init_process_group("gloo")
    results = []
    with torch.backends.mkldnn.flags(enabled=SPEC.get("mkldnn", True)):
        for case in SPEC.get("cases") or [{}]:
            results.append(_case(case))
    payload = {"rank": RANK, "pid": os.getpid(), "package": iso.__file__, "cases": results}
    (OUT / f"rank{RANK}.json").write_text(json.dumps(payload, default=str))
    dist.barrier()  # neither rank leaves (taking torchrun's store with it) before both wrote
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
