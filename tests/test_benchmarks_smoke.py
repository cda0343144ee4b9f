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
    out = _run("fleet_compile.py", "--smoke", "--json", "--no-write")
    result = json.loads(out.stdout[out.stdout.index("{\n  \"benchmark\""):])
    measured_old = not result["old_design"].startswith("not measured")  # needs git
    every, decided, *old = result["modes"]
    assert [m["mode"] for m in result["modes"]] == [
        "every rank", "decisions", *(["graph leader (104dc68)"] if measured_old else [])]
    assert all(r["ok"] for m in result["modes"] for r in m["ranks_detail"])
    assert all(r["ops_tuned"] == 1 for r in every["ranks_detail"])
    leader, follower = decided["ranks_detail"]
    assert (leader["ops_tuned"], follower["ops_tuned"], follower["ops_decided"]) == (1, 0, 1)
    assert follower["fleet_outcomes"] == ["decided"]
    # the previous design shares no graph with mkldnn on: every rank tunes
    assert all(r["ops_tuned"] == 1 for m in old for r in m["ranks_detail"])
    figures = result["per_op"]["smoke"]
    assert figures["autotune_s_leader"] > 0 and figures["decided_ops"] == 1
    assert [x["ranks"] for x in result["extrapolation"]["smoke"]] == [8, 64]
    assert result["machine"]["torch"]
