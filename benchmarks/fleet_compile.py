"""A fleet's compile: wall time until every rank has compiled, with shared autotune decisions
vs every rank autotuning vs the graph-level leader of commit 104dc68, side by side in one run.

    python benchmarks/fleet_compile.py [--smoke] [--ranks 2 4] [--json] [--no-write]

Each mode and rank count is one ``torch.distributed.run --nproc_per_node=N`` job (gloo, CPU,
one intra-op thread per rank, all ranks of one node sharing one fresh Inductor cache dir, as
by default) of tests/fleet_rank_probe.py: an MLP with frozen weights under ``torch.no_grad()``
and mkldnn on (torch's CPU default: each GEMM is a ``packed_linear`` Inductor autotunes, C++
template vs MKL, and Inductor bypasses its FX graph cache) compiled under ``iso.override()``,
the ranks starting together (a barrier). ``--smoke``: 32 wide, 1 GEMM, 2 ranks, without the
old design; else two
MLPs of 4 GEMMs: 64 wide at batch 8 (here the C++ template wins: a decided op is checked
against MKL on each follower) and 256 wide at batch 64 (MKL wins: a decided op is the
reference itself, run unbenchmarked).

- ``every rank``: no fleet: each rank autotunes and checks every GEMM;
- ``decisions``: ``fleet="job"``: rank 0 tunes each GEMM, the others wait for its decision
  and check the decided choice against the reference on their own inputs;
- ``graph leader (104dc68)``: the previous design, ``fleet="job"`` in the package as of commit
  104dc68 (extracted with ``git archive`` into a temporary directory and imported instead of
  this checkout): one leader compiles each graph, followers wait for it per graph and load
  it from Inductor's graph cache.

Printed and saved: the load average before and after (others share the cores), per mode
the wall time (first compile start to last compile end) and the ranks' CPU seconds while
compiling (each rank's own and its g++ children's), per rank its compile time, the ops
it tuned (and their autotune seconds) and the ops decided elsewhere (and their check
seconds; decided templates apart), its waits. ``per_op`` (per model) gives the measured
mean autotune time A of a tuned op and check time C of a decided op; ``extrapolation`` the
autotuning rank-seconds of N ranks from them: every rank N x K x A,
decisions K x A + (N - 1) x K x C (K ops).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import machine, write_result

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
PROBE = TESTS / "fleet_rank_probe.py"
OLD = "104dc68"
FLEET = {"fleet": "job", "fleet_timeout_s": 1200}


def old_package(into: Path) -> str | None:
    """The package as of commit ``OLD``, extracted under ``into``; None if git cannot."""
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", OLD,
                                  "inductor_sm_override"], capture_output=True, check=True,
                                 timeout=120).stdout
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    return str(into)


def launch(out: Path, ranks: int, case: dict[str, Any], package: str | None) -> list[dict]:
    """One N-rank torchrun job of the probe; each rank's result for its one case."""
    sys.path.insert(0, str(TESTS))
    from two_ranks import run_two_ranks

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("INDUCTOR_SM_OVERRIDE", "TORCHINDUCTOR_REDIS",
                                "TORCHINDUCTOR_FX_GRAPH_REMOTE", "TORCHINDUCTOR_AUTOGRAD_REMOTE"))}
    env.update({"TORCHINDUCTOR_CACHE_DIR": str(out / "inductor"), "OMP_NUM_THREADS": "1",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                            env.get("PYTHONPATH")]))})
    out.mkdir(parents=True)
    spec = {"cases": [case], **({"package": package} if package else {})}
    results = run_two_ranks(PROBE, out, json.dumps(spec), env=env, timeout_s=3600,
                            ranks=ranks)
    for result in results:
        if package and not result["package"].startswith(package):
            raise RuntimeError(f"rank {result['rank']} imported {result['package']}")
    return [r["cases"][0] for r in results]


def rank_row(rank: int, case: dict[str, Any]) -> dict[str, Any]:
    ops = [d for d in case["decisions"] if d["name"] == "packed_linear"]
    tuned = [d for d in ops if d.get("origin", "tuned here") == "tuned here"]
    decided = [d for d in ops if str(d.get("origin")).startswith("decided by")]
    templates = [d for d in decided if d["winner"] not in d["externs"]]
    return {
        "rank": rank, "ok": case["ok"],
        "compile_s": round(case["finished"] - case["started"], 3),
        "cpu_s": case.get("cpu_s"),
        "ops_tuned": len(tuned),
        "autotune_s": round(sum(d.get("seconds") or 0.0 for d in tuned), 3),
        "ops_decided": len(decided),
        "check_s": round(sum(d.get("seconds") or 0.0 for d in decided), 3),
        "decided_templates": len(templates),
        "template_check_s": round(sum(d.get("seconds") or 0.0 for d in templates), 3),
        "waited_s": round(sum(e.get("waited_s") or 0.0 for e in case["fleet"]), 3),
        "fleet_outcomes": sorted({str(e.get("outcome")) for e in case["fleet"]}),
        "fleet_wait_ends": sorted({str(e.get("wait_end")) for e in case["fleet"]}),
    }


def mode_row(name: str, model: str, ranks: int, cases: list[dict[str, Any]]) -> dict[str, Any]:
    wall = max(c["finished"] for c in cases) - min(c["started"] for c in cases)
    return {"model": model, "mode": name, "ranks": ranks, "wall_s": round(wall, 3),
            "cpu_s": round(sum(c["cpu_s"] for c in cases), 3),
            "ranks_detail": [rank_row(r, c) for r, c in enumerate(cases)]}


def per_op(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean autotune seconds of a tuned op and check seconds of a decided op (decisions
    mode: the leader's tuned ops, the followers' decided ones; every-rank mode: all)."""
    def mean(pairs: list[tuple[int, float]]) -> float | None:
        count = sum(n for n, _ in pairs)
        return round(sum(s for _, s in pairs) / count, 3) if count else None

    decided = [r for m in rows if m["mode"] == "decisions" for r in m["ranks_detail"]]
    every = [r for m in rows if m["mode"] == "every rank" for r in m["ranks_detail"]]
    leaders = [r for r in decided if r["rank"] == 0]
    followers = [r for r in decided if r["rank"] > 0]
    return {"autotune_s_leader": mean([(r["ops_tuned"], r["autotune_s"]) for r in leaders]),
            "check_s_follower": mean([(r["ops_decided"], r["check_s"]) for r in followers]),
            "template_check_s_follower": mean([(r["decided_templates"], r["template_check_s"])
                                               for r in followers]),
            "decided_templates": sum(r["decided_templates"] for r in followers),
            "decided_ops": sum(r["ops_decided"] for r in followers),
            "autotune_s_every_rank": mean([(r["ops_tuned"], r["autotune_s"]) for r in every])}


def extrapolate(ops: int, figures: dict[str, Any]) -> list[dict[str, Any]]:
    a, c = figures["autotune_s_leader"], figures["check_s_follower"]
    if a is None or c is None:
        return []
    return [{"ranks": n, "ops": ops, "autotune_rank_s_every_rank": round(n * ops * a, 1),
             "autotune_rank_s_decisions": round(ops * a + (n - 1) * ops * c, 1)}
            for n in (8, 64)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model, 2 ranks, for CI")
    parser.add_argument("--ranks", type=int, nargs="+", default=None)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    models = {"smoke": {"width": 32, "depth": 1, "batch": 8}} if args.smoke else {
        "64 wide, batch 8": {"width": 64, "depth": 4, "batch": 8},
        "256 wide, batch 64": {"width": 256, "depth": 4, "batch": 64}}
    counts = args.ranks or ([2] if args.smoke else [2, 4])
    rows, load_before = [], os.getloadavg()  # others' load on these cores, 1/5/15 min
    with tempfile.TemporaryDirectory(prefix="iso-fleet-bench-") as tmp:
        old = None if args.smoke else old_package(Path(tmp))  # the smoke: the new modes only
        modes = [("every rank", {}, None), ("decisions", FLEET, None)]
        modes += [(f"graph leader ({OLD})", FLEET, old)] if old else []
        for index, (label, model) in enumerate(models.items()):
            for ranks in counts:
                for name, settings, package in modes:
                    where = Path(tmp) / f"{index}-{ranks}-{name.split()[0]}"
                    case = {"entry": "override", "settings": settings, **model}
                    rows.append(mode_row(name, label, ranks,
                                         launch(where, ranks, case, package)))
                    print(f"{label}, {ranks} ranks, {name}: wall {rows[-1]['wall_s']:.2f} s, "
                          f"CPU {rows[-1]['cpu_s']:.1f} s; "
                          + "; ".join(
                              f"rank {r['rank']}: compile {r['compile_s']:.1f} s, tuned "
                              f"{r['ops_tuned']} ({r['autotune_s']:.1f} s), decided "
                              f"{r['ops_decided']} ({r['check_s']:.1f} s), waited "
                              f"{r['waited_s']:.1f} s" for r in rows[-1]["ranks_detail"]),
                          flush=True)
    figures = {label: per_op([r for r in rows if r["model"] == label]) for label in models}
    payload = {
        "benchmark": "fleet_compile", "machine": machine(),
        "load_avg": {"before": [round(x, 2) for x in load_before],
                     "after": [round(x, 2) for x in os.getloadavg()]},
        "models": {label: {**m, "dtype": "torch.float32", "freezing": True, "mkldnn": True}
                   for label, m in models.items()},
        "old_design": OLD if old else ("not measured: --smoke" if args.smoke else
                                       f"not measured: git archive {OLD} failed"),
        "modes": rows,
        "ratio_to_every_rank": {f"{m['model']}, {m['ranks']} ranks, {m['mode']}": round(
            m["wall_s"] / next(e["wall_s"] for e in rows if e["ranks"] == m["ranks"]
                               and e["model"] == m["model"] and e["mode"] == "every rank"), 3)
            for m in rows},
        "per_op": figures,
        "extrapolation": {label: extrapolate(models[label]["depth"], f)
                          for label, f in figures.items()},
    }
    print(json.dumps(payload["ratio_to_every_rank"], indent=1))
    for label, rows_n in payload["extrapolation"].items():
        print(f"{label}: per op {figures[label]}")
        for x in rows_n:
            print(f"  {x['ranks']} ranks: autotuning {x['autotune_rank_s_every_rank']} rank-s "
                  f"every rank vs {x['autotune_rank_s_decisions']} rank-s with decisions")
    if args.json:
        print(json.dumps(payload, indent=2, default=str))
    if not args.no_write:
        print("wrote", write_result("fleet_compile" + ("-smoke" if args.smoke else ""),
                                    payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
