"""`make demo` (issue 23, item 3): the same model plain / override / capped, compared, with a
verdict; torch's own autotune tables and warnings kept out, the user's settings kept."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings

import pytest

from inductor_sm_override.compile_scope import QUIET_CONFIG as SILENT_CONFIG
from inductor_sm_override.tools import cli, demo
from inductor_sm_override.tools.demo import WORKLOADS, DemoResult, ModeResult
from inductor_sm_override.tools.quiet import GATE_LOGGER, torch_autotune_output_hidden
from inductor_sm_override.tools.verdict import format_comparison, verdict

TORCH_NOISE = ("AUTOTUNE ", "Autotune Choices Stats", "TypedStorage is deprecated",
               "SingleProcess AUTOTUNE")


def _decision(winner: str, *, rejected=None, capped=()) -> dict:
    return {"name": "mm", "externs": ["mm"], "offered": ["mm", "tpl_a", "tpl_b"],
            "timings": {"mm": 1.0, "tpl_a": 0.5, "tpl_b": None}, "winner": winner,
            "rejected": rejected or {}, "capped": list(capped)}


def _result(device: str, *, sms=None, gate=None, plain_ms=1.0, override_ms=1.0,
            capped_ms=1.0, spread=0.0, wrong=False) -> DemoResult:
    modes = [
        ModeResult("plain", None, 2.0, plain_ms, spread, 1e-6, True),
        ModeResult("override", {}, 20.0, override_ms, spread, 2e-6, not wrong,
                   "output: 3 of 512 values off" if wrong else "",
                   [_decision("tpl_a"), _decision("mm", rejected={"tpl_b": "NaN"})]),
        ModeResult("capped", {"max_choices": 8}, 8.0, capped_ms, spread, 1e-6, True, "",
                   [_decision("tpl_a", capped=["tpl_c", "tpl_d"]), _decision("mm")]),
    ]
    return DemoResult(WORKLOADS[device], "machine", sms, "2.13.0", 1e-6, gate, modes)


def test_cpu_verdict_says_the_gate_does_not_apply_and_timings_are_noise():
    lines = verdict(_result("cpu"))
    text = "\n".join(lines)
    assert lines[0].startswith("correctness: every mode matches the float64 reference")
    assert "verification: 4 template run(s) checked against ATen, 1 rejected" in text
    assert "cap (max_choices=8): 2 template choice(s) cut" in text
    assert "a CPU has no SM gate" in text and "cannot make it faster" in text
    assert "not been measured yet" in text
    assert text.count("noise") == 1  # said once
    assert "x plain" not in text  # no compile-time ratios from a noisy CPU


def test_gpu_verdict_on_a_gated_gpu_where_templates_won():
    gate = {"torch_answer": False, "answer": True}
    text = "\n".join(verdict(_result("cuda", sms=46, gate=gate, override_ms=0.8,
                                     capped_ms=0.9)))
    assert "torch gates this GPU (46 SMs < 68)" in text
    assert "won 2 of 4 GEMM decisions" in text
    assert "override 25% faster" in text and "paid off" in text
    assert "override 20.0 s (10.00x plain)" in text  # compile cost, side by side


def test_gpu_verdict_on_a_gated_gpu_where_templates_lost():
    gate = {"torch_answer": False, "answer": True}
    text = "\n".join(verdict(_result("cuda", sms=46, gate=gate, override_ms=1.3,
                                     capped_ms=1.01)))
    assert "override 23% slower" in text and "capped the same within noise" in text
    assert "did not pay off" in text and 'prefer="fastest"' in text


def test_gpu_verdict_within_the_measured_spread_claims_nothing():
    text = "\n".join(verdict(_result("cuda", sms=46, override_ms=0.9, spread=0.15)))
    assert "override the same within noise (+-17%)" in text


def test_gpu_verdict_on_a_big_gpu_says_torch_already_offers_templates():
    text = "\n".join(verdict(_result("cuda", sms=132, gate={"torch_answer": True})))
    assert "torch does not gate this GPU (132 SMs >= 68)" in text
    assert "simulate_sms=46" in text


def test_a_wrong_mode_is_the_first_thing_said_and_fails_the_command(monkeypatch, capsys,
                                                                     tmp_path):
    bad = _result("cpu", wrong=True)
    assert verdict(bad)[0] == "correctness: WRONG in override (output: 3 of 512 values off)"
    assert "WRONG" in format_comparison(bad)
    monkeypatch.setattr(demo, "run_demo", lambda *a, **k: bad)
    assert cli.main(["demo", "--device", "cpu", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "- correctness: WRONG in override" in out and "verdict (machine" in out


def test_a_failed_compile_is_reported_and_blamed_right(monkeypatch, capsys, tmp_path):
    both = _result("cpu")
    for mode in both.modes[:2]:  # plain and override
        mode.error, mode.passed = "CppCompileError: C++ compile error", False
    lines = verdict(both)
    assert lines == ["compile FAILED in plain (CppCompileError: C++ compile error); override "
                     "(CppCompileError: C++ compile error): plain torch failed too, so this "
                     "is torch's problem on this machine, not the override's "
                     "(docs/versions.md, 'Known torch problems')"]
    assert "FAILED" in format_comparison(both).splitlines()[1]
    ours = _result("cuda", sms=46, gate={"torch_answer": False})
    ours.modes[1].error, ours.modes[1].passed = "RuntimeError: boom", False
    text = "\n".join(verdict(ours))
    assert text.startswith("compile FAILED in override (RuntimeError: boom)\n")
    assert "torch's problem" not in text and "capped" in text  # the others still compared
    monkeypatch.setattr(demo, "run_demo", lambda *a, **k: both)
    assert cli.main(["demo", "--device", "cpu", "--out", str(tmp_path)]) == 1


def test_torch_that_cannot_compile_at_all_is_one_line(monkeypatch, capsys, tmp_path):
    def broken(workload):
        raise RuntimeError("C++ compile error\n<thousands of lines of g++ output>")

    monkeypatch.setattr(demo, "_warm_up", broken)
    code = cli.main(["demo", "--device", "cpu", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert "cannot compile even a tiny Linear with max-autotune on cpu here, without the " \
        "override: RuntimeError: C++ compile error (a torch problem" in err[0]


def test_comparison_table_has_a_row_per_mode_and_eager():
    table = format_comparison(_result("cpu")).splitlines()
    assert table[0].split()[:4] == ["mode", "compile", "s", "run"]
    assert [row.split()[0] for row in table[1:]] == ["plain", "override", "capped", "eager"]
    override = table[2].split()
    assert override[1:4] == ["20.0", "1.0000", "2e-06"] and override[4] == "ok"
    assert override[5:] == ["2", "2", "1", "1", "0"]  # autotuned, run, wins, rejected, capped


def test_quiet_block_silences_torch_and_restores_the_users_settings():
    import torch._inductor.config as config

    logger = logging.getLogger(GATE_LOGGER)
    before_level = logger.level
    logger.setLevel(logging.INFO)  # the user's own choice
    key = "autotune_num_choices_displayed"
    before_value = getattr(config, key)
    config.autotune_num_choices_displayed = 3
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            filters = list(warnings.filters)
            with torch_autotune_output_hidden():
                for name, value in SILENT_CONFIG.items():
                    if hasattr(config, name):
                        assert getattr(config, name) == value
                assert logger.level == logging.ERROR
                warnings.warn("TypedStorage is deprecated. It will be removed", UserWarning,
                              stacklevel=1)
                warnings.warn("the user's own warning", UserWarning, stacklevel=1)
            assert list(warnings.filters) == filters
            warnings.warn("TypedStorage is deprecated (after)", UserWarning, stacklevel=1)
        messages = [str(w.message) for w in caught]
        assert messages == ["the user's own warning", "TypedStorage is deprecated (after)"]
        assert config.autotune_num_choices_displayed == 3
        assert logger.level == logging.INFO
    finally:
        config.autotune_num_choices_displayed = before_value
        logger.setLevel(before_level)


@pytest.mark.slow
def test_make_demo_compares_three_modes_without_torchs_tables(tmp_path):
    """What `make demo` runs, in a fresh folder: a comparison, a verdict, no torch tables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDUCTOR_SM_OVERRIDE")}
    out = subprocess.run([sys.executable, "-m", "inductor_sm_override", "demo", "--device",
                          "cpu"], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    both = out.stdout + out.stderr
    for noise in TORCH_NOISE:
        assert noise not in both, noise
    lines = out.stdout.splitlines()
    rows = {line.split()[0]: line.split() for line in lines if line.split()
            and line.split()[0] in ("plain", "override", "capped", "eager")}
    assert set(rows) == {"plain", "override", "capped", "eager"}
    for mode in ("plain", "override", "capped"):
        assert rows[mode][4] == "ok" and float(rows[mode][1]) > 0 and float(rows[mode][2]) > 0
    assert int(rows["override"][6]) >= 2  # templates run: CPU freezing really autotunes
    verdict_at = lines.index(next(ln for ln in lines if ln.startswith("verdict (")))
    said = "\n".join(lines[verdict_at:])
    assert "- correctness: every mode matches" in said
    assert "a CPU has no SM gate" in said and said.count("noise") == 1
    assert (tmp_path / "runs" / "demo-cpu-override.jsonl").is_file()
    assert (tmp_path / "runs" / "demo-cpu-capped.jsonl").is_file()


@pytest.mark.gpu
def test_make_demo_on_a_gpu_runs_the_gpu_variant(tmp_path):
    import torch

    out = subprocess.run([sys.executable, "-m", "inductor_sm_override", "demo"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "on cuda" in out.stdout and "float16" in out.stdout
    for noise in TORCH_NOISE:
        assert noise not in out.stdout + out.stderr, noise
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    gated = "torch gates this GPU" if sms < 68 else "torch does not gate this GPU"
    assert f"{gated} ({sms} SMs" in out.stdout
    rows = {ln.split()[0]: ln.split() for ln in out.stdout.splitlines() if ln.split()
            and ln.split()[0] in ("plain", "override", "capped")}
    assert int(rows["override"][6]) > 0  # Triton templates were run under the override
    assert all(rows[m][4] == "ok" for m in rows)


def test_a_failed_compile_is_named_by_its_innermost_cause():
    class BackendCompilerFailed(Exception):  # noqa: N818 - dynamo's name; cause in inner_exception
        def __init__(self, inner):
            super().__init__("backend='inductor' raised:\nCppCompileError: ...")
            self.inner_exception = inner

    inner = RuntimeError("C++ compile error\nCommand: g++ ...")
    assert demo._first_line(BackendCompilerFailed(inner)) == "RuntimeError: C++ compile error"
    try:  # the innermost quotes a whole command line: the brief one above it is named
        raise inner from OSError("Command '['g++', " + "'-O3', " * 100 + "]' failed")
    except RuntimeError as exc:
        assert demo._first_line(BackendCompilerFailed(exc)) == \
            "RuntimeError: C++ compile error"
    huge = ValueError("x" * 500)
    assert demo._first_line(huge) == "ValueError: " + "x" * 148 + "..."
