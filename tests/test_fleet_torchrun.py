"""Shared decisions for real (issue 29): 2 ranks under ``torch.distributed.run`` (gloo, CPU),
frozen weights with mkldnn on (Inductor bypasses its graph cache there, so only decisions
can be shared), one Inductor cache dir for the node (tests/fleet_rank_probe.py).

Two jobs, one after the other, several compiles each (a torchrun job costs processes):

- job 1: ``iso.override``, ``iso.backend`` and ``iso.compile`` under ``fleet="job"``: rank 0
  tunes every op, rank 1 tunes none and checks every decided template it runs; then
  corrupted decisions (a choice that does not exist, a choice whose output is wrong on
  rank 1): rank 1 autotunes those ops itself and the compile still matches eager;
- job 2, the env layer only (``INDUCTOR_SM_OVERRIDE=1``, ``..._FLEET=job``), the first
  model again: neither rank tunes anything (the shared directory); the same model under
  other settings is tuned again.
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
FLEET = {"fleet": "job", "fleet_timeout_s": TIMEOUT_S}


def _launch(tmp_path: Path, cases: list[dict], extra_env: dict | None = None) -> list[dict]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("INDUCTOR_SM_OVERRIDE", "TORCHINDUCTOR_REDIS"))}
    env.update({"TORCHINDUCTOR_CACHE_DIR": str(tmp_path.parent / "inductor"),
                "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)})
    env.update(extra_env or {})
    tmp_path.mkdir()
    ranks = run_two_ranks(PROBE, tmp_path, json.dumps({"cases": cases}), env=env,
                          timeout_s=1200)
    return [r["cases"] for r in ranks]


def _ops(case: dict) -> list[dict]:
    return [d for d in case["decisions"] if d["name"] == "packed_linear"]


def _checked(op: dict) -> bool:
    """The op's winner is the reference itself, or passed its check here."""
    winner = op["winner"]
    return winner in op["externs"] or winner == op["reference_added"] or \
        (op["checks"].get(winner) or {}).get("passed") is True


def _assert_shared(leader: dict, follower: dict) -> None:
    """Rank 0 tuned every op, rank 1 none: it ran rank 0's picks, each checked here."""
    assert leader["ok"] and follower["ok"], (leader, follower)
    tuned, decided = _ops(leader), _ops(follower)
    assert len(tuned) == len(decided) == 2, (tuned, decided)
    assert all(op["origin"] == "tuned here" for op in tuned)
    assert all(op["origin"] == "decided by rank 0" for op in decided), decided
    assert [op["winner"].rsplit("_", 1)[0] for op in decided] == \
        [op["winner"].rsplit("_", 1)[0] for op in tuned]
    assert all(_checked(op) and not op["winner_unchecked"] for op in decided)
    assert {op["key"] for op in decided} == {op["key"] for op in tuned}
    fleet = follower["fleet"]
    assert [e["outcome"] for e in fleet] == ["decided", "decided"]
    assert all(e["role"] == "follower" and e["tuned_by"] == 0 for e in fleet)
    assert all(e["waited_s"] < TIMEOUT_S for e in fleet)


def test_two_ranks_share_checked_decisions_across_jobs(tmp_path):
    cases = [{"entry": "override", "settings": FLEET, "width": 32},
             {"entry": "backend", "settings": FLEET, "width": 64},
             {"entry": "compile", "settings": FLEET, "width": 96},
             {"entry": "override", "settings": FLEET, "width": 128, "bogus": True,
              "faults": True}]
    leader, follower = _launch(tmp_path / "job1", cases)
    for index in range(3):
        _assert_shared(leader[index], follower[index])
    assert follower[2]["used"] == "override"  # iso.compile kept the override
    # corrupted decisions: rank 1 autotuned both ops itself, and matches eager
    corrupt = follower[3]
    assert corrupt["ok"] and leader[3]["ok"]
    events = {e["outcome"] for e in corrupt["fleet"]}
    assert [e["outcome"] for e in corrupt["fleet"]] == ["dropped", "dropped"], events
    details = " | ".join(e["detail"] for e in corrupt["fleet"])
    assert "names a choice not offered here" in details and "failed its check" in details
    final = [op for op in _ops(corrupt) if op["origin"] == "tuned here"]
    assert len(final) == 2 and all(any("autotuned here" in n for n in op["notes"])
                                   for op in final)
    assert all(op["winner"] in op["externs"] for op in final)  # the wrong template lost
    assert all(op["rejected"] for op in final)

    # job 2: the env layer, the same settings (report path per rank), then other settings
    env = {"INDUCTOR_SM_OVERRIDE": "1", "INDUCTOR_SM_OVERRIDE_FLEET": "job",
           "INDUCTOR_SM_OVERRIDE_FLEET_TIMEOUT_S": str(TIMEOUT_S),
           "INDUCTOR_SM_OVERRIDE_REPORT": str(tmp_path / "iso-{rank}.jsonl")}
    leader, follower = _launch(tmp_path / "job2", [
        {"entry": "env", "width": 32}, {"entry": "env", "width": 32,
                                        "settings": {"max_choices": 1}}], env)
    for rank in (leader[0], follower[0]):
        assert rank["ok"] and rank["used"] == "env"
        assert all(op["origin"].startswith("decided by rank 0") for op in _ops(rank))
        assert all(_checked(op) for op in _ops(rank)) and len(_ops(rank)) == 2
        assert all(e["outcome"] == "decided" for e in rank["fleet"])
    # from the directory job 1 left (a rank that found it there also puts it in the store)
    sources = {e["source"] for rank in (leader[0], follower[0]) for e in rank["fleet"]}
    assert "the shared directory" in sources
    assert sources <= {"the shared directory", "the job's store"}
    _assert_shared(leader[1], follower[1])  # other settings: tuned again, shared again
    table = subprocess.run([*CLI, "report", str(tmp_path / "iso-1.jsonl")],
                           capture_output=True, text=True, timeout=120).stdout
    assert "fleet (job, leader rank 0): rank 1 follower: 4 ops: 4 decided elsewhere" in table, \
        table
