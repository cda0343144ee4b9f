"""Compile once per fleet, for real: 2 ranks under ``torch.distributed.run`` (gloo, CPU),
each compiling an autotuned model (tests/fleet_rank_probe.py), issue 21.

- leader + Redis (one cache dir per rank, so a hit can only come from Redis), switched on
  by the environment variables alone: the follower autotunes nothing and loads the
  leader's graph from Redis, with the leader as its producer;
- the leader's compile raises: the follower compiles itself as soon as the leader says
  so, not after the timeout (``iso.override``, a per-node leader, one shared cache dir);
- the ranks compile different graphs (rank-dependent batch): the follower stops waiting
  once the leader is on another graph (``iso.compile``, the default process group's
  store).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from two_ranks import run_two_ranks

HERE = Path(__file__).parent
PROBE = HERE / "fleet_rank_probe.py"
CLI = [sys.executable, "-m", "inductor_sm_override"]
TIMEOUT_S = 300  # fleet_timeout_s: a follower that waited this long failed the test
pytestmark = pytest.mark.slow


def _launch(tmp_path: Path, spec: dict, extra_env: dict | None = None) -> list[dict]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("INDUCTOR_SM_OVERRIDE", "TORCHINDUCTOR_REDIS"))}
    env.update({"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"), "OMP_NUM_THREADS": "1",
                "PYTHONPATH": str(HERE.parent)})
    env.update(extra_env or {})
    return run_two_ranks(PROBE, tmp_path, json.dumps(spec), env=env, timeout_s=900)


def _benchmarked(result: dict) -> list[dict]:
    """Autotune decisions that timed at least one choice (something was autotuned)."""
    return [d for d in result["decisions"]
            if any(t is not None for t in (d.get("timings") or {}).values())]


def _only(items: list) -> dict:
    assert len(items) == 1, items
    return items[0]


def test_leader_and_redis_the_follower_autotunes_nothing(redis_server, tmp_path):
    env = {**redis_server.env, "INDUCTOR_SM_OVERRIDE": "1", "INDUCTOR_SM_OVERRIDE_FLEET": "job",
           "INDUCTOR_SM_OVERRIDE_FLEET_TIMEOUT_S": str(TIMEOUT_S),
           "INDUCTOR_SM_OVERRIDE_REPORT": str(tmp_path / "iso-{rank}.jsonl")}
    leader, follower = _launch(tmp_path, {"entry": "env", "cache": "per_rank"}, env)
    assert leader["ok"] and follower["ok"], (leader, follower)
    assert _benchmarked(leader) and leader["miss"] >= 1
    led = _only(leader["fleet"])
    assert (led["role"], led["outcome"], led["rank"]) == ("leader", "written", 0)
    # the follower: nothing autotuned, the leader's graph from Redis
    assert follower["decisions"] == [] and follower["hit"] >= 1
    hit = _only(follower["hits"])
    assert hit["source"] == "remote" and hit["unverified"] is False
    assert hit["producer"]["rank"] == 0 and hit["producer"]["pid"] == leader["pid"]
    assert hit["key"] == led["key"]
    assert any(op["checks_passed"] for op in hit["ops"])  # checked where it was made
    followed = _only(follower["fleet"])
    assert (followed["role"], followed["outcome"], followed["key"]) == \
        ("follower", "hit", led["key"])
    assert followed["wait_end"] in ("leader_done", "manifest")
    assert followed["waited_s"] < TIMEOUT_S
    table = subprocess.run([*CLI, "report", str(tmp_path / "iso-1.jsonl")],
                           capture_output=True, text=True, timeout=120).stdout
    assert "fleet (job, leader rank 0): rank 1 followed 1 graph: 1 loaded, waited" in table, table
    table = subprocess.run([*CLI, "report", str(tmp_path / "iso-0.jsonl")],
                           capture_output=True, text=True, timeout=120).stdout
    assert "fleet (job, leader rank 0): rank 0 led 1 graph: 1 written" in table, table


def test_a_failing_leader_makes_the_follower_compile_at_once(tmp_path):
    settings = {"fleet": "node", "fleet_timeout_s": TIMEOUT_S}
    leader, follower = _launch(tmp_path, {"entry": "override", "settings": settings,
                                          "fail_leader": True})
    assert "injected leader failure" in leader["used"] and not leader["ok"]
    led = _only(leader["fleet"])
    assert (led["role"], led["outcome"]) == ("leader", "failed")
    assert follower["ok"] and _benchmarked(follower)  # compiled and autotuned itself
    followed = _only(follower["fleet"])
    assert (followed["role"], followed["outcome"]) == ("follower", "compiled")
    assert followed["wait_end"] == "leader_failed" and followed["key"] == led["key"]
    assert followed["waited_s"] < TIMEOUT_S
    assert followed["group"] == "node 0" and followed["leader"] == "local rank 0"


def test_a_follower_whose_graph_differs_does_not_wait_for_it(tmp_path):
    settings = {"fleet": "job", "fleet_timeout_s": TIMEOUT_S}
    leader, follower = _launch(tmp_path, {"entry": "compile", "settings": settings,
                                          "shape_by_rank": True, "init": "file"})
    assert leader["used"] == follower["used"] == "override"
    assert leader["ok"] and follower["ok"] and _benchmarked(follower)
    led = _only(leader["fleet"])
    followed = _only(follower["fleet"])
    assert led["outcome"] == "written" and led["store"] == "the default process group's store"
    assert followed["key"] != led["key"] and followed["outcome"] == "compiled"
    assert followed["wait_end"] == "leader_other_graph"
    assert followed["waited_s"] < TIMEOUT_S
