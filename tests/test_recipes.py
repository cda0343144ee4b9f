"""The recipes of docs/recipes.md, run for real on CPU: each framework starts the job, only
environment variables switch the override on, and the report shows what was autotuned.

Each test runs one script of tests/recipes/ in a subprocess (its own Inductor cache), then
reads the JSONL report and the ``inductor-sm-override report`` table. On CPU, Inductor
offers a template (its C++ GEMM) only for frozen weights, so inference paths run with
``TORCHINDUCTOR_FREEZING=1``; training GEMMs are autotune events with the ATen choice only.
Select them with ``-m recipes``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from inductor_sm_override.tools.report import read_events

pytestmark = [pytest.mark.recipes, pytest.mark.slow]

HERE = Path(__file__).parent
RECIPES = HERE / "recipes"
BIN = Path(sys.executable).parent
CLI = [sys.executable, "-m", "inductor_sm_override"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDUCTOR_SM_OVERRIDE")}
    env.pop("TORCHINDUCTOR_FREEZING", None)
    env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / "inductor-cache")  # nothing cached
    env["PYTHONPATH"] = str(HERE.parent)
    env.update(extra)
    return env


def _run(command: list[str], env: dict[str, str], timeout: int = 600):
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout,
                         cwd=str(HERE.parent))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    results = [json.loads(line) for line in out.stdout.splitlines()
               if line.startswith('{"recipe"')]
    ours = [line for line in out.stderr.splitlines() if line.startswith("inductor_sm_override:")]
    return results, ours, out


def _autotuned(path: Path) -> list[dict]:
    events, errors = read_events(str(path))
    assert errors == []
    return [e for e in events if e["event"] == "autotune"]


def _benchmarked(events: list[dict]) -> list[dict]:
    """Ops whose template choice really ran, was verified, and was timed next to ATen."""
    done = []
    for e in events:
        templates = [c for c in e["timings"] if c not in e["externs"]]
        if templates and len(e["timings"]) >= 2 and all(v is not None
                                                        for v in e["timings"].values()):
            assert all(e["checks"][c]["passed"] for c in templates), e
            done.append(e)
    return done


def _table(path: Path) -> str:
    out = subprocess.run([*CLI, "report", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _on(result: dict, report: Path) -> None:
    assert result["patched"] is True
    assert result["base"]["source"].startswith("environment: INDUCTOR_SM_OVERRIDE=1")
    assert result["base"]["report"] is not None
    assert report.exists()


def test_generate_on_a_compiled_model(tmp_path):
    pytest.importorskip("transformers")
    report = tmp_path / "gen.jsonl"
    env = _env(tmp_path, INDUCTOR_SM_OVERRIDE="1", INDUCTOR_SM_OVERRIDE_REPORT=str(report),
               TORCHINDUCTOR_FREEZING="1")
    (result,), ours, _ = _run([sys.executable, str(RECIPES / "generate_recipe.py")], env)
    assert ours == []
    _on(result, report)
    assert result["tokens"] == 4 and result["same_as_eager"] is True
    events = _autotuned(report)
    benchmarked = _benchmarked(events)
    assert len(benchmarked) >= 7  # the Llama layer's 7 Linears and the LM head, at least once
    assert {e["name"] for e in benchmarked} == {"packed_linear"}
    table = _table(report)
    assert "cpp_CppMicroGemm" in table and f"total: {len(events)} ops" in table


def test_hf_trainer_training_then_compiled_evaluation(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    report = tmp_path / "trainer.jsonl"
    env = _env(tmp_path, INDUCTOR_SM_OVERRIDE="1", INDUCTOR_SM_OVERRIDE_REPORT=str(report),
               TORCHINDUCTOR_FREEZING="1")
    (result,), ours, _ = _run([sys.executable, str(RECIPES / "trainer_recipe.py"),
                               str(tmp_path / "out")], env)
    assert ours == []
    _on(result, report)
    assert result["steps"] == 3 and result["compiled"] == "OptimizedModule"
    assert result["eval_compiled"] == "OptimizedModule"
    events = _autotuned(report)
    training = [e for e in events if e["name"] == "mm"]
    # forward and backward GEMMs of the 8 Linears reach the autotuner under the override;
    # on CPU (no frozen weights) ATen is their only choice: nothing is benchmarked
    assert len(training) >= 16
    assert all(e["timings"] == {} and e["kept"] == e["externs"] for e in training)
    assert len(_benchmarked(events)) >= 7  # the evaluation's GEMMs, frozen: templates timed


def test_accelerate_launch_one_process(tmp_path):
    pytest.importorskip("accelerate")
    launcher = shutil.which("accelerate", path=str(BIN)) or shutil.which("accelerate")
    if launcher is None:
        pytest.skip("accelerate launcher not on PATH")
    env = _env(tmp_path, INDUCTOR_SM_OVERRIDE="1", TORCHINDUCTOR_FREEZING="1",
               INDUCTOR_SM_OVERRIDE_REPORT=str(tmp_path / "iso-{rank}.jsonl"))
    (result,), ours, _ = _run([launcher, "launch", "--num_processes", "1", "--num_machines",
                               "1", "--mixed_precision", "no", "--cpu", "--dynamo_backend",
                               "inductor", "--dynamo_mode", "max-autotune",
                               str(RECIPES / "launch_recipe.py"), "--accelerate"], env)
    assert ours == []
    report = tmp_path / "iso-0.jsonl"
    _on(result, report)
    assert result["dynamo"]["mode"] == "max-autotune" and result["compiled"] == "OptimizedModule"
    assert result["max_abs_err"] < 1e-5
    assert len(_benchmarked(_autotuned(report))) == 2


def test_torchrun_two_ranks_one_report_each(tmp_path):
    env = _env(tmp_path, INDUCTOR_SM_OVERRIDE="1", INDUCTOR_SM_OVERRIDE_MAX_CHOICES="1",
               INDUCTOR_SM_OVERRIDE_REPORT=str(tmp_path / "iso-{rank}.jsonl"),
               TORCHINDUCTOR_FREEZING="1")
    results, ours, _ = _run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node=2", str(RECIPES / "launch_recipe.py")], env)
    assert ours == []
    assert sorted(r["rank"] for r in results) == ["0", "1"]
    assert len({r["pid"] for r in results}) == 2
    for result in results:
        report = tmp_path / f"iso-{result['rank']}.jsonl"
        _on(result, report)
        assert result["base"]["max_choices"] == 1
        assert result["world"] == 2 and result["ranks_done"] == 2
        events = _autotuned(report)
        assert {(e["pid"], e["rank"]) for e in events} == {(result["pid"], result["rank"])}
        assert len(_benchmarked(events)) == 2
        assert "cpp_CppMicroGemm" in _table(report)


def test_lightning_fit_then_predict(tmp_path):
    pytest.importorskip("lightning")
    report = tmp_path / "pl.jsonl"
    env = _env(tmp_path, INDUCTOR_SM_OVERRIDE="1", INDUCTOR_SM_OVERRIDE_REPORT=str(report),
               TORCHINDUCTOR_FREEZING="1")
    (result,), ours, _ = _run([sys.executable, str(RECIPES / "lightning_recipe.py")], env)
    assert ours == []
    _on(result, report)
    assert result["steps"] == 2 and result["max_abs_err"] < 1e-5
    events = _autotuned(report)
    training = [e for e in events if e["name"] in ("mm", "addmm")]
    assert training and all(e["timings"] == {} for e in training)
    assert len(_benchmarked(events)) == 2  # predict (inference mode, frozen): templates timed


def test_bad_variable_leaves_the_job_running_with_one_line(tmp_path):
    report = tmp_path / "bad.jsonl"
    env = _env(tmp_path, INDUCTOR_SM_OVERRIDE="1", INDUCTOR_SM_OVERRIDE_MAX_CHOICES="lots",
               INDUCTOR_SM_OVERRIDE_REPORT=str(report))
    (result,), ours, _ = _run([sys.executable, str(RECIPES / "launch_recipe.py"), "--single"],
                              env)
    assert len(ours) == 1
    assert "INDUCTOR_SM_OVERRIDE_MAX_CHOICES='lots'" in ours[0] and "stays off" in ours[0]
    assert result["max_abs_err"] < 1e-5  # the job ran to the end, compiled by torch alone
    assert result["patched"] is False and result["base"] is None
    assert not report.exists()


NOTEBOOK_CELLS = """
import json, os
os.environ["INDUCTOR_SM_OVERRIDE"] = "1"        # like %env in a running kernel: too late
import torch._inductor.compile_fx                # Inductor's entry point: the hook's moment
import inductor_sm_override as iso
late = iso.status()
with iso.override(quiet=True):                   # the notebook recipe: the Python API
    inside = iso.status()
print(json.dumps({"late_base": late["base"], "late_patched": late["patched"],
                  "inside_patched": inside["patched"], "after": iso.status()["patched"]}))
"""


def test_notebook_variables_set_late_do_nothing(tmp_path):
    """Variables set inside a running interpreter are not seen; ``iso.override`` works."""
    env = _env(tmp_path)
    out = subprocess.run([sys.executable, "-c", NOTEBOOK_CELLS], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"late_base": None, "late_patched": False, "inside_patched": True,
                    "after": False}
