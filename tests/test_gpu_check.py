"""`make gpu-check` (benchmarks/gpu_check.py): the plan fits, the CPU dry run writes real
results through the same code as the GPU run, the run stops itself, the goals are judged
right from the figures."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
BENCH = ROOT / "benchmarks"
SCRIPT = BENCH / "gpu_check.py"
sys.path.insert(0, str(BENCH))

import gpu_check  # noqa: E402
from gpu_check_lib import report as gpu_report  # noqa: E402
from gpu_check_lib.run import Run  # noqa: E402

STEPS = ["pytest", "emulation", "autotune", "training"]
GOAL_STATES = {"PASS", "MISS", "NOT MEASURED"}


def _script(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


# --- the plan ----------------------------------------------------------------------------------

def test_plan_fits_five_minutes_on_an_h100_and_names_every_step():
    out = _script("--plan")
    assert out.returncode == 0, out.stdout + out.stderr
    for step in STEPS:
        assert re.search(rf"^\s+\d\. {step}\s+\d+ s", out.stdout, re.M), out.stdout
    for case in gpu_check.GPU_CASES:
        assert case.label in out.stdout
    total = int(re.search(r"total (\d+) s: fits the 300 s plan", out.stdout).group(1))
    assert total <= 300  # a minute of slack under the run's own 360 s limit
    steps = sum(r["estimate_s"] for r in gpu_check.plan_rows(gpu_check.GPU))
    assert abs(total - steps) < 1


def test_plan_that_does_not_fit_says_so_and_fails(monkeypatch):
    out = _script("--plan", "--limit-s", "100")
    assert out.returncode == 1
    assert "does NOT fit the 100 s plan" in out.stdout
    # over 300 s it fails even under a longer limit
    monkeypatch.setattr(gpu_check, "plan_rows", lambda sizes: [
        {"step": "x", "title": "x", "estimate_s": 301}])
    assert gpu_check.print_plan(gpu_check.GPU, 360, False) is False


# --- the run's timed-part helper ---------------------------------------------------------------

def _run(tmp_path, limit_s=360.0):
    args = gpu_check.parse_args(["--dry-run", "--out", str(tmp_path), "--limit-s",
                                 str(limit_s)])
    return Run(args, gpu_check.DRY, "cpu", gpu_check.plan_rows(gpu_check.DRY))


def test_timed_part_runs_records_errors_and_skips(tmp_path):
    run = _run(tmp_path)
    assert run.part(1.0, "ok", lambda x: {"x": x}, 3) == {"x": 3}

    def broken():
        raise ValueError("kaput")

    assert run.part(1.0, "broken", broken) == {"error": "ValueError: kaput"}
    run.close()
    assert "ValueError: kaput" in run.path(".log").read_text()  # the traceback is kept
    late = _run(tmp_path, limit_s=0.0)
    assert late.part(5.0, "step 9 late", lambda: {"ran": True}) is None
    assert late.results["skipped"][0].startswith("step 9 late: skipped")
    late.close()


def test_dry_run_console_judges_no_goal():
    rows = [_row("a", "gated", 1.0), _row("a", "forced+verify", 0.9, autotune_s=1.0)]
    results = {**_results(rows), "dry_run": True}
    results["goals"] = gpu_check.goals(results)
    assert results["goals"][0]["status"] == "PASS"  # the judging code works on CPU figures
    lines = gpu_report.goal_lines(results)
    assert lines[0] == gpu_report.DRY_RUN_VERDICT
    assert not [line for line in lines if "PASS" in line or "MISS" in line]
    assert all(line.startswith("goal not judged (dry run)") for line in lines[1:])
    gpu = gpu_report.goal_lines({**results, "dry_run": False})
    assert gpu[0].startswith("goal PASS")


def test_attention_block_gives_sdpa_4d_tensors(monkeypatch):
    """3-D q/k/v select neither flash nor memory-efficient attention (the math path)."""
    import torch
    from gpu_check_lib.cases import AttentionBlock

    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        seen.append((q.shape, k.shape, v.shape))
        return real(q, k, v, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    block = AttentionBlock(32, 2).eval()
    x = torch.randn(8, 32)
    out = block(x)
    assert seen == [(torch.Size([1, 2, 8, 16]),) * 3]  # (batch, heads, seq, head_dim)
    # the same causal attention, written out per head
    qkv = block.qkv(block.norm(x)).view(8, 3, 2, 16)
    q, k, v = (qkv[:, i].transpose(0, 1) for i in range(3))
    mask = torch.ones(8, 8, dtype=torch.bool).tril()
    att = (q @ k.transpose(1, 2) / 4).masked_fill(~mask, float("-inf")).softmax(-1) @ v
    torch.testing.assert_close(out, x + block.out(att.transpose(0, 1).reshape(8, 32)))


@pytest.mark.gpu
def test_attention_block_runs_on_flash_or_memory_efficient_attention():
    import torch
    from gpu_check_lib.cases import AttentionBlock
    from torch.nn.attention import SDPBackend, sdpa_kernel

    block = AttentionBlock(4096, 32).cuda().half().eval()
    x = torch.randn(256, 4096, device="cuda", dtype=torch.float16)
    with torch.no_grad(), sdpa_kernel([SDPBackend.FLASH_ATTENTION,
                                       SDPBackend.EFFICIENT_ATTENTION]):
        out = block(x)  # raises "No available kernel" for shapes only the math path takes
    assert out.shape == x.shape and bool(out.isfinite().all())


def test_gpu_run_without_a_gpu_refuses_clearly(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    out = _script("--out", str(tmp_path))
    assert out.returncode == 2
    assert "no CUDA GPU" in out.stderr and "--dry-run" in out.stderr
    assert not list(tmp_path.iterdir())


# --- the goals, judged from figures ---------------------------------------------------------

def _row(key, mode, ms, kind="gemm", **extra):
    return {"case": key, "key": key, "kind": kind, "mode": mode, "ms": ms, **extra}


def _results(rows, cost=()):
    for row in rows:
        gated = next(r["ms"] for r in rows if r["key"] == row["key"] and r["mode"] == "gated")
        row.setdefault("speedup_vs_gated", gated / row["ms"])
        row.setdefault("noise", 0.02)
    return {"rows": rows, "autotune_cost": list(cost)}


def test_goals_pass_on_good_figures():
    rows = []
    for key, kind in (("a", "gemm"), ("m", "mlp"), ("t", "attn")):
        rows += [_row(key, "gated", 1.0, kind), _row(key, "forced+verify", 0.9, kind,
                                                     autotune_s=10.0),
                 _row(key, "cap8+verify", 0.91, kind, autotune_s=3.0),
                 _row(key, "fastest", 0.9, kind)]
    cost = [{"mode": "exhaustive+budget", "ms": 1.0, "autotune_s": 30.0, "reached": "9 of 90"},
            {"mode": "exhaustive cap8+verify", "ms": 1.0, "autotune_s": 5.2},
            {"mode": "exhaustive cap8 no-verify", "ms": 1.0, "autotune_s": 5.0}]
    goals = gpu_check.goals(_results(rows, cost))
    assert [g["status"] for g in goals] == ["PASS"] * 4, goals
    assert "reached 9 of 90" in goals[2]["detail"]


def test_goals_miss_where_a_figure_misses():
    rows = [_row("a", "gated", 1.0), _row("a", "forced+verify", 1.10, autotune_s=10.0),
            _row("a", "cap8+verify", 1.2, autotune_s=5.0), _row("a", "fastest", 1.0),
            _row("m", "gated", 1.0, "mlp"), _row("m", "fastest", 1.01, "mlp")]
    cost = [{"mode": "exhaustive cap8+verify", "ms": 1.0, "autotune_s": 6.0},
            {"mode": "exhaustive cap8 no-verify", "ms": 1.0, "autotune_s": 5.0}]
    goals = gpu_check.goals(_results(rows, cost))
    assert [g["status"] for g in goals] == ["MISS"] * 4, goals
    assert "slower beyond noise: a x0.909" in goals[0]["detail"]
    assert "+20.0%" in goals[3]["detail"]


def test_goals_allow_noise_and_say_not_measured_without_figures():
    rows = [_row("a", "gated", 1.0), _row("a", "forced+verify", 1.04, noise=0.05)]
    goals = gpu_check.goals(_results(rows))
    assert goals[0]["status"] == "PASS"  # 4% slower, inside the measured 5% noise
    assert [g["status"] for g in goals[1:]] == ["NOT MEASURED"] * 3
    assert [g["status"] for g in gpu_check.goals({"rows": [], "autotune_cost": []})] == \
        ["NOT MEASURED"] * 4


def test_kernels_in_generated_code():
    code = ("triton_tem_fused_addmm_0 = async_compile.triton('x', '''\n...''')\n"
            "triton_poi_fused_gelu_1 = async_compile.triton('y', '''\n...''')\n"
            "cpp_fused_mm_2 = async_compile.cpp_pybinding([], r'''\nkernel_micro_gemm<1>''')\n"
            "def call(args):\n    extern_kernels.mm(a, b, out=c)\n"
            "    torch.ops.mkl._mkl_linear.default(x)\n")
    assert gpu_check.kernels_in_code([code]) == (
        ["cpp_fused_mm_2", "triton_tem_fused_addmm_0"], ["_mkl_linear", "mm"])


# --- the dry run: the same code on the CPU, through make -----------------------------------

@pytest.mark.slow
def test_dry_run_through_make_writes_real_results(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(["make", "--no-print-directory", "gpu-check", "DRY_RUN=1",
                          f"OUT={tmp_path}", f"PYTHON={sys.executable}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    files = sorted(p.name for p in tmp_path.iterdir())
    # the device tool returns at most 8 files, named in letters, digits, '.', '_', '-'
    assert len(files) == 7 and all(re.fullmatch(r"[A-Za-z0-9._-]+", f) for f in files), files
    (stem,) = {f.split(".json")[0] for f in files if f.endswith(".json")}
    assert re.fullmatch(r"gpu_check-dryrun-cpu-torch[\d.]+-triton\S+-\d{4}-\d\d-\d\d-\d{4}Z",
                        stem)
    for suffix in (".csv", ".md", ".log", ".png", "-pytest.xml", "-decisions.jsonl"):
        assert stem + suffix in files

    results = json.loads((tmp_path / f"{stem}.json").read_text())
    assert results["dry_run"] is True and results["machine"]["torch"]
    assert {k: v["status"] for k, v in results["steps"].items()} == dict.fromkeys(STEPS, "done")
    # step 2: every case in every mode, timed, checked against fp64, compared with gated
    rows = results["rows"]
    cases = [c.label for c in gpu_check.DRY.cases]
    assert [(r["case"], r["mode"]) for r in rows] == [(c, m) for c in cases
                                                      for m in gpu_check.MODES]
    for row in rows:
        assert "error" not in row, row
        assert row["recompiled_while_timed"] == 0, row  # timed what the block compiled
        assert row["ms"] > 0 and row["compile_s"] > 0 and row["rel_err_fp64"] < 1e-4, row
        assert row["speedup_vs_gated"] > 0 and row["noise"] >= 0.02
    gemm = [r for r in rows if r["kind"] == "gemm"]
    assert all(r["ops"] >= 1 and r["winner"] for r in gemm), gemm  # real CPU autotuning
    assert any(r["code_templates"] or r["code_externs"] for r in gemm if r["mode"] != "fastest")
    assert next(r for r in rows if r["mode"] == "fastest")["used"] in ("override", "plain")
    with open(tmp_path / f"{stem}.csv") as handle:
        assert len(list(csv.DictReader(handle))) == len(rows)
    # step 3 and step 4
    assert [r["mode"] for r in results["autotune_cost"]] == list(gpu_check.DRY.cost_estimate_s)
    assert all(r["ms"] > 0 and "reached" in r for r in results["autotune_cost"])
    assert [r["mode"] for r in results["training"]] == ["gated", "cap8+verify"]
    assert all(r["grad_rel_err_fp64"] < 1e-4 and r["forward_ops"] + r["backward_ops"] == r["ops"]
               for r in results["training"])
    # step 1: the gpu tests were collected and skipped (a dry run hides CUDA from pytest)
    junit = ET.parse(tmp_path / f"{stem}-pytest.xml").getroot()
    suite = junit if junit.tag == "testsuite" else next(junit.iter("testsuite"))
    assert int(suite.get("tests")) >= 1
    assert results["pytest"]["skipped"] == results["pytest"]["tests"]
    # the goals and the summary
    assert [g["status"] in GOAL_STATES for g in results["goals"]] == [True] * 4
    summary = (tmp_path / f"{stem}.md").read_text()
    assert "DRY RUN" in summary
    for goal in results["goals"]:
        assert f"| {goal['goal']} | {goal['status']} |" in summary
    for row in rows:
        assert f"| {row['case']} | {row['mode']}" in summary
    assert "Backward GEMM decisions under the override: present" in summary
    assert "## Notes" in summary and "## Skipped" not in summary
    assert (tmp_path / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
    # the console: a dry run judges nothing
    assert gpu_report.DRY_RUN_VERDICT in out.stdout
    assert not re.search(r"goal (PASS|MISS)", out.stdout), out.stdout[-3000:]
    log = (tmp_path / f"{stem}.log").read_text()
    for number, step in enumerate(STEPS, 1):
        assert re.search(rf"\[gpu-check +[\d.]+ s\] step {number} {step}: done in", log), step
    decisions = (tmp_path / f"{stem}-decisions.jsonl").read_text().splitlines()
    assert {json.loads(line)["step"] for line in decisions} >= {"emulation", "autotune"}


@pytest.mark.slow
def test_run_stops_itself_before_the_limit_and_says_what_it_skipped(tmp_path):
    out = _script("--dry-run", "--out", str(tmp_path), "--limit-s", "0")
    assert out.returncode == 0, out.stderr[-2000:]
    (path,) = tmp_path.glob("gpu_check-*.json")
    results = json.loads(path.read_text())
    assert {k: v["status"] for k, v in results["steps"].items()} == \
        dict.fromkeys(STEPS, "skipped (time)")
    assert not results["rows"] and not results["training"]
    assert len(results["skipped"]) == 4 and "SKIP step 1 pytest" in out.stdout
    assert [g["status"] for g in results["goals"]] == ["NOT MEASURED"] * 4
    summary = path.with_suffix(".md").read_text()
    assert "## Skipped (time limit)" in summary and "step 4 training" in summary


@pytest.mark.slow
def test_watchdog_ends_a_run_that_overstays_and_keeps_what_was_saved(tmp_path):
    # limit 0 + 0.5 s grace: the watchdog fires during the start-up compile
    out = _script("--dry-run", "--out", str(tmp_path), "--limit-s", "0", "--grace-s", "0.5")
    assert out.returncode == 3, out.stdout[-2000:] + out.stderr[-2000:]
    assert "HARD STOP" in out.stdout
    (path,) = tmp_path.glob("gpu_check-*.json")
    results = json.loads(path.read_text())
    assert any(s.startswith("HARD STOP") for s in results["skipped"])
