"""Compile once per fleet: wall time until every rank of a 2-rank job has compiled, with a
leader and a shared Redis vs every rank autotuning for itself, side by side in one run.

    python benchmarks/fleet_compile.py [--smoke] [--json] [--no-write]

Each mode is one ``torch.distributed.run --nproc_per_node=2`` job (gloo, CPU, one intra-op
thread per rank) of tests/fleet_rank_probe.py: an autotuned frozen MLP (``--smoke``: 32
wide, 1 GEMM; else 512 wide, 6 GEMMs, batch 64, as compile_budget.py) compiled under
``iso.override()``, each rank with its own empty Inductor cache dir (as on separate nodes),
both ranks starting the compile together (after a barrier). The benchmark starts its own
``redis-server`` on 127.0.0.1 (tests/redis_server.py, the tests' fixture) and stops it.

- ``every rank``: no fleet, no Redis: both ranks autotune and verify every GEMM;
- ``leader + Redis``: ``fleet="job"``, Inductor's remote FX-graph and AOT-autograd caches
  on the server: rank 0 compiles and writes, rank 1 waits and loads;
- ``node leader + shared dir`` (for comparison): ``fleet="node"``, no Redis, one Inductor
  cache dir for both ranks (one node): rank 1 loads from the local cache the leader filled,
  including the kernels it built.

Printed and saved: each mode's wall time (first compile start to last compile end), the
ratios, each rank's compile time and autotune time (the ``seconds`` of its autotune
decisions), and in the leader modes the follower's wait and its hit cost (its compile time
minus the wait: tracing, lookup, load and, from Redis on the CPU, building the graph's C++
kernels from the source the entry carries). From those, ``extrapolation`` works out 8 and
64 ranks (``ASSUMPTIONS``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import machine, write_result

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
PROBE = TESTS / "fleet_rank_probe.py"
RANKS = 2


def launch(out: Path, spec: dict[str, Any], extra_env: dict[str, str]) -> list[dict[str, Any]]:
    """One 2-rank torchrun job of the probe; returns each rank's result."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("INDUCTOR_SM_OVERRIDE", "TORCHINDUCTOR_REDIS",
                                "TORCHINDUCTOR_FX_GRAPH_REMOTE", "TORCHINDUCTOR_AUTOGRAD_REMOTE"))}
    env.update({"TORCHINDUCTOR_CACHE_DIR": str(out / "inductor"), "OMP_NUM_THREADS": "1",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                            env.get("PYTHONPATH")]))})
    env.update(extra_env)
    run = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={RANKS}", str(PROBE), str(out), json.dumps(spec)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        output, _ = run.communicate(timeout=1800)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        output, _ = run.communicate()
    if run.returncode != 0:
        raise RuntimeError(f"the {spec} job failed:\n{output[-3000:]}")
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(RANKS)]


def rank_row(result: dict[str, Any]) -> dict[str, Any]:
    fleet = result["fleet"][0] if result["fleet"] else {}
    return {
        "rank": result["rank"],
        "ok": result["ok"],
        "compile_s": round(result["finished"] - result["started"], 3),
        "autotune_s": round(sum(d.get("seconds") or 0.0 for d in result["decisions"]), 3),
        "ops_autotuned": len(result["decisions"]),
        "fx_hits": result["hit"], "fx_misses": result["miss"],
        "remote_hits": sum(1 for h in result["hits"] if h.get("source") == "remote"),
        "fleet_role": fleet.get("role"), "fleet_outcome": fleet.get("outcome"),
        "fleet_wait_end": fleet.get("wait_end"),
        "waited_s": round(sum(e.get("waited_s") or 0.0 for e in result["fleet"]), 3),
    }


def mode_row(name: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    ranks = [rank_row(r) for r in results]
    wall = max(r["finished"] for r in results) - min(r["started"] for r in results)
    return {"mode": name, "wall_s": round(wall, 3), "ranks": ranks}


def hit_cost(mode: dict[str, Any]) -> float:
    """The follower's compile time minus its wait: what loading the leader's graph cost."""
    follower = mode["ranks"][1]
    return round(follower["compile_s"] - follower["waited_s"], 3)


def extrapolate(leader: dict[str, Any], ranks: int) -> dict[str, Any]:
    """N ranks from the measured per-rank figures (see ``ASSUMPTIONS``)."""
    alone = leader["ranks"][0]  # the leader compiled while its follower waited
    hit = hit_cost(leader)
    return {
        "mode": leader["mode"],
        "ranks": ranks,
        "compute_s_every_rank": round(ranks * alone["compile_s"], 1),
        "compute_s_leader": round(alone["compile_s"] + (ranks - 1) * hit, 1),
        "compute_s_saved": round((ranks - 1) * (alone["compile_s"] - hit), 1),
        "autotune_s_saved": round((ranks - 1) * alone["autotune_s"], 1),
        "wall_s_every_rank_no_contention": round(alone["compile_s"], 1),
        "wall_s_leader": round(alone["compile_s"] + hit, 1),
    }


ASSUMPTIONS = (
    "Per-rank figures are the leader's (it compiled with the other rank idle, so without "
    "the contention of the 'every rank' mode, where both ranks compiled on these 2 cores): "
    "one rank's compile C and autotune A; H is the follower's hit cost (its compile time "
    "minus its wait). compute_s: rank-seconds spent compiling, every rank N x C, with a "
    "leader C + (N-1) x H (waiting ranks idle, not counted); autotune_s_saved (N-1) x A. "
    "wall_s: if ranks do not contend (each compiles on cores of its own) every rank "
    "finishes in C, while with a leader the followers wait for it and then load: C + H "
    "(Redis serving N-1 reads at once assumed free). Where ranks of a node share its cores "
    "for compiling (as the 2 ranks here share 2 cores: see the 'every rank' mode), "
    "every-rank wall time grows with the ranks per node and the leader's does not.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model, for CI")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    sys.path.insert(0, str(TESTS))
    from redis_server import RedisServer, missing

    why = missing()
    if why is not None:
        print(f"fleet_compile: needs a redis-server: {why}", file=sys.stderr)
        return 2
    model = {"width": 32, "depth": 1, "batch": 8} if args.smoke else \
        {"width": 512, "depth": 6, "batch": 64}
    base = {"entry": "override", "cache": "per_rank", "init": "before", **model}
    server = RedisServer().start()
    try:
        with tempfile.TemporaryDirectory(prefix="iso-fleet-bench-") as tmp:
            every = mode_row("every rank", launch(Path(tmp) / "every", dict(base), {}))
            leader_spec = {**base, "settings": {"fleet": "job", "fleet_timeout_s": 1200}}
            leader = mode_row("leader + Redis",
                              launch(Path(tmp) / "leader", leader_spec, server.env))
            node_spec = {**base, "cache": "shared",
                         "settings": {"fleet": "node", "fleet_timeout_s": 1200}}
            node = mode_row("node leader + shared dir",
                            launch(Path(tmp) / "node", node_spec, {}))
    finally:
        server.stop()
    payload = {
        "benchmark": "fleet_compile",
        "machine": machine(),
        "model": {**model, "dtype": "torch.float32", "freezing": True},
        "ranks": RANKS,
        "modes": [every, leader, node],
        "ratio_leader_to_every_rank": round(leader["wall_s"] / every["wall_s"], 3),
        "ratio_node_leader_to_every_rank": round(node["wall_s"] / every["wall_s"], 3),
        "per_rank_autotune_s": leader["ranks"][0]["autotune_s"],
        "per_rank_compile_s": leader["ranks"][0]["compile_s"],
        "per_rank_autotune_s_contended": max(r["autotune_s"] for r in every["ranks"]),
        "per_rank_compile_s_contended": max(r["compile_s"] for r in every["ranks"]),
        "follower_waited_s": leader["ranks"][1]["waited_s"],
        "hit_cost_s": hit_cost(leader),
        "hit_cost_local_s": hit_cost(node),
        "extrapolation": [extrapolate(mode, n) for mode in (leader, node) for n in (8, 64)],
        "assumptions": ASSUMPTIONS,
    }
    for row in (every, leader, node):
        ranks = "; ".join(
            f"rank {r['rank']}: compile {r['compile_s']:.2f} s, autotune {r['autotune_s']:.2f} s"
            f" ({r['ops_autotuned']} ops), {r['remote_hits']} remote hits"
            + (f", {r['fleet_role']} {r['fleet_outcome']} after waiting {r['waited_s']:.2f} s"
               if r["fleet_role"] else "")
            for r in row["ranks"])
        print(f"{row['mode']:24s} wall {row['wall_s']:7.2f} s  ({ranks})")
    print(f"leader + Redis / every rank: {payload['ratio_leader_to_every_rank']}x wall time "
          f"(node leader + shared dir: {payload['ratio_node_leader_to_every_rank']}x)")
    print(f"one rank alone: compile {payload['per_rank_compile_s']:.2f} s, autotune "
          f"{payload['per_rank_autotune_s']:.2f} s; hit cost {payload['hit_cost_s']:.2f} s "
          f"(Redis), {payload['hit_cost_local_s']:.2f} s (shared dir)")
    for x in payload["extrapolation"]:
        print(f"{x['mode']}, {x['ranks']} ranks: saves {x['compute_s_saved']} rank-s of "
              f"compiling ({x['autotune_s_saved']} s of autotuning); wall {x['wall_s_leader']}"
              f" s vs {x['wall_s_every_rank_no_contention']} s without contention")
    if args.json:
        print(json.dumps(payload, indent=2, default=str))
    if not args.no_write:
        print("wrote", write_result("fleet_compile" + ("-smoke" if args.smoke else ""),
                                    payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
