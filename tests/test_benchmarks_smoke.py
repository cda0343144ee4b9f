"""The benchmarks run (tiny, on the CPU) so they never rot; their JSON is well formed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "benchmarks"
pytestmark = pytest.mark.slow


def _run(script: str, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=BENCH,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_gemm_suite_smoke(tmp_path):
    _run("gemm_suite.py", "--smoke", "--out", str(tmp_path))
    (result,) = tmp_path.glob("gemm_suite-smoke-cpu-*.json")
    payload = json.loads(result.read_text())
    rows = payload["rows"]
    assert {r["mode"] for r in rows} == {"gated", "forced", "cap8", "verify", "fastest"}
    assert all("ms" in r and r["rel_err_fp64"] < 1e-4 for r in rows), rows
    assert all(r["used"] in ("gated", "forced", "cap8", "verify", "override", "plain")
               for r in rows)
    assert payload["machine"]["torch"]
    assert (tmp_path / result.name.replace(".json", ".csv")).exists()
    assert (tmp_path / result.name.replace(".json", ".png")).read_bytes()[:4] == b"\x89PNG"


def test_gate_overhead_runs():
    out = _run("gate_overhead.py", "--calls", "2000", "--rounds", "1", "--json")
    result = json.loads(out.stdout)
    assert result["inactive_vs_never"] > 0 and result["active_vs_never"] > 0


def test_compile_budget_and_verify_overhead_smoke():
    out = _run("compile_budget.py", "--smoke", "--no-write")
    assert "budget kept: True" in out.stdout
    out = _run("verify_overhead.py", "--smoke", "--no-write")
    assert "verify on" in out.stdout


def test_call_overhead_smoke():
    out = _run("call_overhead.py", "--smoke", "--json", "--no-write")
    result = json.loads(out.stdout[out.stdout.index("{\n  \"benchmark\""):])
    assert set(result["ratio_to_torch_compile"]) == {
        "eager", "torch.compile", "compiled in iso.override()", "iso.compile", "iso.backend"}
    assert result["ratio_to_torch_compile"]["torch.compile"] == 1.0
    assert all(us > 0 for us in result["us_per_call_median"].values())
    assert result["iso.compile used"] == "override"
    assert result["patched after compile"] is False  # nothing held between calls


def test_fleet_compile_smoke():
    from redis_server import missing

    why = missing()
    if why is not None:
        print(f"\nskipping the fleet benchmark: {why}")
        pytest.skip(why)
    out = _run("fleet_compile.py", "--smoke", "--json", "--no-write")
    result = json.loads(out.stdout[out.stdout.index("{\n  \"benchmark\""):])
    every, leader, node = result["modes"]
    assert (every["mode"], leader["mode"], node["mode"]) == (
        "every rank", "leader + Redis", "node leader + shared dir")
    assert all(r["ok"] for m in (every, leader, node) for r in m["ranks"])
    assert all(r["ops_autotuned"] >= 1 and r["fleet_role"] is None for r in every["ranks"])
    chief, follower = leader["ranks"]
    assert (chief["fleet_role"], chief["fleet_outcome"]) == ("leader", "written")
    assert (follower["fleet_role"], follower["fleet_outcome"]) == ("follower", "hit")
    assert follower["ops_autotuned"] == 0 and follower["remote_hits"] >= 1
    local = node["ranks"][1]
    assert (local["fleet_outcome"], local["ops_autotuned"], local["remote_hits"]) == \
        ("hit", 0, 0)
    assert result["ratio_leader_to_every_rank"] == round(leader["wall_s"] / every["wall_s"], 3)
    assert result["per_rank_autotune_s"] > 0 and result["hit_cost_s"] > 0
    assert result["hit_cost_local_s"] > 0
    assert [(x["mode"], x["ranks"]) for x in result["extrapolation"]] == [
        ("leader + Redis", 8), ("leader + Redis", 64), ("node leader + shared dir", 8),
        ("node leader + shared dir", 64)]
    assert result["machine"]["torch"]
