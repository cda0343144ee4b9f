"""The CLI's rough edges (issue 23, item 7): one clear line, the flag's name, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from inductor_sm_override.tools import cli
from inductor_sm_override.tools.report import format_table, summarize

CLI = [sys.executable, "-m", "inductor_sm_override"]
EVENT = {"event": "autotune", "name": "mm", "device": "cpu", "shapes": [[4, 4]],
         "offered": ["mm", "tpl"], "externs": ["mm"], "timings": {"mm": 1.0, "tpl": 0.5},
         "winner": "tpl", "capped": [], "budget_dropped": [], "rejected": {}, "seconds": 0.1}


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("INDUCTOR_SM_OVERRIDE")}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=_env(),
                          timeout=300)


def _main(capsys, *args: str) -> tuple[int, str, str]:
    """``cli.main`` in this process; argparse's exit counts as the exit status."""
    try:
        code = cli.main(list(args))
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def report_file(tmp_path):
    path = tmp_path / "iso.jsonl"
    path.write_text(json.dumps({"event": "start"}) + "\n" + json.dumps(EVENT) + "\n")
    return path


def test_bare_command_lists_the_commands():
    out = _cli()
    assert out.returncode == 2
    assert "the following arguments are required" not in out.stderr
    for command in ("run", "hook", "demo", "doctor", "report", "status"):
        assert f"\n    {command} " in out.stderr, command
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("args, flag", [
    (("run", "--max-choices", "-2", "--", "true"), "--max-choices"),
    (("run", "--min-sms", "-1", "--", "true"), "--min-sms"),
    (("run", "--budget-s", "-5", "--", "true"), "--budget-s"),
    (("run", "--simulate-sms", "0", "--", "true"), "--simulate-sms"),
    (("run", "--rtol", "nan", "--", "true"), "--rtol"),
    (("run", "--fleet", "rack", "--", "true"), "--fleet"),
    (("run", "--fleet-timeout-s", "-1", "--", "true"), "--fleet-timeout-s"),
    (("doctor", "--min-sms", "-1"), "--min-sms"),
])
def test_bad_values_are_refused_naming_the_flag(capsys, args, flag):
    code, out, err = _main(capsys, *args)
    assert code == 2 and out == ""
    last = err.strip().splitlines()[-1]
    assert f"argument {flag}: '{args[2]}' is not accepted: expected " in last
    field = flag.lstrip("-").replace("-", "_")
    assert f"{field}=" not in err  # the Python argument name is not what the user typed


def test_good_values_still_reach_the_command(capsys, monkeypatch):
    from inductor_sm_override.tools import launcher

    seen = {}
    monkeypatch.setattr(launcher, "exec_command", lambda cmd, env: seen.update(env=env))
    assert cli.main(["run", "--max-choices", "8", "--budget-s", "1.5", "--", "true"]) == 0
    assert seen["env"]["INDUCTOR_SM_OVERRIDE_MAX_CHOICES"] == "8"
    assert seen["env"]["INDUCTOR_SM_OVERRIDE_BUDGET_S"] == "1.5"
    assert "INDUCTOR_SM_OVERRIDE_FLEET" not in seen["env"]
    assert "INDUCTOR_SM_OVERRIDE_REQUIRE_MANIFEST" not in seen["env"]
    assert cli.main(["run", "--require-manifest", "--fleet", "Job", "--fleet-timeout-s", "90",
                     "--", "true"]) == 0
    assert seen["env"]["INDUCTOR_SM_OVERRIDE_REQUIRE_MANIFEST"] == "1"
    assert seen["env"]["INDUCTOR_SM_OVERRIDE_FLEET"] == "job"
    assert seen["env"]["INDUCTOR_SM_OVERRIDE_FLEET_TIMEOUT_S"] == "90.0"


def test_doctor_help_documents_every_option():
    text = " ".join(_cli("doctor", "--help").stdout.split())
    assert "--json everything as one JSON object" in text
    assert "--min-sms N also show the gate's answer" in text


def test_report_plot_into_a_missing_folder_is_one_line(report_file, tmp_path):
    target = tmp_path / "nonexistent" / "t.png"
    out = _cli("report", str(report_file), "--plot", str(target))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"inductor-sm-override report: cannot write the plot {target}: {target.parent} is "
        "not an existing folder"]
    assert not target.parent.exists()


def test_report_plot_that_cannot_be_written_is_one_line(capsys, monkeypatch, report_file,
                                                        tmp_path):
    from inductor_sm_override.tools import report

    def refuse(events, out):
        raise PermissionError(13, "Permission denied", out)

    monkeypatch.setattr(report, "plot", refuse)
    target = tmp_path / "t.png"
    code, out, err = _main(capsys, "report", str(report_file), "--plot", str(target))
    assert code == 2
    assert "total: 1 op," in out  # the table still came out
    assert err.strip().splitlines() == [
        f"inductor-sm-override report: cannot write the plot {target}: Permission denied"]


def test_report_of_a_binary_file_is_one_line(tmp_path):
    path = tmp_path / "picture.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20)
    out = _cli("report", str(path))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"inductor-sm-override report: {path} is not a JSONL report")
    assert "not UTF-8 text" in line


def test_report_with_one_non_utf8_line_names_it_and_shows_the_rest(capsys, report_file):
    report_file.write_bytes(report_file.read_bytes() + b"\xff\xfe broken\n"
                            + json.dumps(EVENT).encode() + b"\n")
    code, out, err = _main(capsys, "report", str(report_file))
    assert code == 0  # the valid events make the table
    assert err.strip().splitlines() == [
        f"inductor-sm-override report: 1 line skipped: {report_file}:3: not UTF-8 text "
        "(byte 0xff at column 1)"]
    assert "total: 2 ops" in out


def test_many_malformed_lines_are_counted_not_listed(capsys, report_file):
    report_file.write_text(report_file.read_text() + "{oops\n" * 12)
    code, _out, err = _main(capsys, "report", str(report_file))
    assert code == 0
    assert err.strip().splitlines() == [
        f"inductor-sm-override report: 12 lines skipped (first: {report_file}:3: not valid "
        "JSON (Expecting property name enclosed in double quotes))"]


def test_one_cache_hit_and_one_op_are_singular():
    table = format_table(summarize([EVENT, {"event": "cache_hit", "key": "k"}]))
    assert "total: 1 op, " in table
    assert "1 graph loaded from cache (autotuned" in table and "1 graphs" not in table
    two = format_table(summarize([EVENT, EVENT] + [{"event": "cache_hit"}] * 2))
    assert "total: 2 ops, " in two and "2 graphs loaded from cache" in two


# --- item 2: a block in which no template was offered is explained -------------------------

ATEN_ONLY = {**EVENT, "offered": ["addmm"], "externs": ["addmm"], "timings": {},
             "winner": "addmm", "name": "addmm"}


def test_report_explains_cpu_ops_without_a_template():
    summary = summarize([ATEN_ONLY, ATEN_ONLY, EVENT])
    assert summary["totals"]["no_template"] == 2
    table = format_table(summary)
    assert "no template choice was offered for 2 of 3 ops" in table
    assert "torch._inductor.config.freezing = True" in table and "torch.no_grad()" in table
    assert "no template choice" not in format_table(summarize([EVENT]))


def test_report_explains_gpu_ops_without_a_template_by_the_gate():
    gate = {"event": "gate", "device": "cuda:0", "sms": 46, "threshold": 68,
            "torch_answer": False, "answer": False}
    table = format_table(summarize([gate, {**ATEN_ONLY, "device": "cuda:0"}]))
    assert "no template choice was offered for 1 of 1 op " in table
    assert "the SM gate said no (46 SMs, threshold 68)" in table
    assert "freezing" not in table  # CPU advice only for CPU ops


@pytest.mark.parametrize("freezing", ["0", "1"])
def test_doctor_says_whether_cpu_templates_are_offered(freezing):
    env = {**_env(), "TORCHINDUCTOR_FREEZING": freezing}
    out = subprocess.run([*CLI, "doctor", "--json"], capture_output=True, text=True,
                         env=env, timeout=300)
    info = json.loads(out.stdout)["cpu_templates"]
    assert info["freezing"] is (freezing == "1")
    if freezing == "1":
        assert info["advice"].startswith("freezing is on")
    else:
        assert "every CPU GEMM has the single ATen choice" in info["advice"]
        assert "torch._inductor.config.freezing = True" in info["advice"]


# --- issue 28: paths checked up front, any case, shell exit codes, usage of the command -----

@pytest.fixture
def no_exec(monkeypatch):
    """`run` in this process must never replace it: the command is recorded instead."""
    from inductor_sm_override.tools import launcher

    seen: dict = {}
    monkeypatch.setattr(launcher, "exec_command",
                        lambda cmd, env: seen.update(command=list(cmd), env=env))
    return seen


@pytest.mark.parametrize("where", ["file", "proc"])
def test_demo_out_that_cannot_be_a_folder_is_one_line(capsys, tmp_path, where):
    target = tmp_path / "taken" if where == "file" else "/proc/iso-demo-out"
    if where == "file":
        target.write_text("mine\n")
    code, _out, err = _main(capsys, "demo", "--out", str(target))
    assert code == 2 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"inductor-sm-override demo: --out {target}: ")
    if where == "file":
        assert target.read_text() == "mine\n"


def test_run_report_that_is_a_folder_is_refused(capsys, tmp_path, no_exec):
    code, _out, err = _main(capsys, "run", "--report", str(tmp_path), "--", "true")
    assert code == 2 and not no_exec
    assert err.strip().splitlines()[-1].endswith(
        f"argument --report: {str(tmp_path)!r} is not accepted: {tmp_path} is a folder, "
        "not a file")
    code, _out, _err = _main(capsys, "run", "--report", str(tmp_path / "a" / "r.jsonl"),
                             "--", "true")
    assert code == 0 and no_exec["env"]["INDUCTOR_SM_OVERRIDE_REPORT"].endswith("r.jsonl")
    (tmp_path / "f").write_text("")
    code, _out, err = _main(capsys, "run", "--report", str(tmp_path / "f" / "r.jsonl"),
                            "--", "true")
    assert code == 2 and f"{tmp_path / 'f'} is a file, not a folder" in err


def test_cli_choices_take_any_case(capsys, no_exec):
    assert cli.main(["run", "--search-space", "exhaustive", "--", "true"]) == 0
    assert no_exec["env"]["INDUCTOR_SM_OVERRIDE_SEARCH_SPACE"] == "EXHAUSTIVE"
    parser = cli.build_parser()
    assert parser.parse_args(["demo", "--device", "CPU"]).device == "cpu"
    assert parser.parse_args(["hook", "Status"]).action == "status"
    code, _out, err = _main(capsys, "run", "--search-space", "huge", "--", "true")
    assert code == 2 and "'huge' is not accepted: expected DEFAULT or EXHAUSTIVE" in err


def test_run_exit_codes_are_the_shells(capsys, tmp_path):
    folder = tmp_path / "adir"
    folder.mkdir()
    code, _out, err = _main(capsys, "run", "--", str(folder))
    assert code == 126 and f"cannot run {str(folder)!r}" in err  # found, not runnable
    code, _out, err = _main(capsys, "run", "--", "no-such-command-iso-28")
    assert code == 127 and "cannot run 'no-such-command-iso-28'" in err  # not found


def test_unknown_option_shows_the_commands_usage(capsys, report_file):
    code, _out, err = _main(capsys, "report", str(report_file), "--bogus")
    assert code == 2
    assert err.startswith("usage: inductor-sm-override report ")
    assert err.strip().splitlines()[-1] == (
        "inductor-sm-override report: error: unrecognized arguments: --bogus")


def test_hook_status_reads_the_site_dir_it_is_given(capsys, tmp_path):
    from inductor_sm_override._hook import PTH_LINE, PTH_NAME

    code, out, _err = _main(capsys, "hook", "status", "--site-dir", str(tmp_path))
    assert code == 0 and f"start-up hook (.pth): not installed in {tmp_path}" in out
    (tmp_path / PTH_NAME).write_text(PTH_LINE)
    code, out, _err = _main(capsys, "hook", "status", "--site-dir", str(tmp_path), "--json")
    assert json.loads(out)["pth_files"] == [str(tmp_path / PTH_NAME)]


def test_the_console_script_points_at_the_cli():
    import importlib

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    target = project["project"]["scripts"]["inductor-sm-override"]
    module, _, name = target.partition(":")
    assert getattr(importlib.import_module(module), name) is cli.main
