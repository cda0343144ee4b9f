"""The INDUCTOR_SM_OVERRIDE* start-up hook, the `run` launcher, children and torchrun."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import inductor_sm_override as iso
from inductor_sm_override._hook import PTH_LINE, PTH_NAME
from inductor_sm_override.api import env as iso_env

HERE = Path(__file__).parent
PROBE = str(HERE / "env_probe.py")
CLI = [sys.executable, "-m", "inductor_sm_override"]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDUCTOR_SM_OVERRIDE")}
    env.update(extra)
    return env


def _probe(*args: str, python: str = sys.executable, **env: str):
    out = subprocess.run([python, PROBE, *args], env=_clean_env(**env), capture_output=True,
                         text=True, timeout=300)
    report = json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else None
    ours = [line for line in out.stderr.splitlines()  # our lines, less the nested block's
            if line.startswith("inductor_sm_override:") and "below min_sms" not in line]
    return out.returncode, report, ours, out.stderr


def test_pth_is_installed_in_this_environment():
    from inductor_sm_override.tools.launcher import installed_pth

    found = installed_pth()
    assert found and found[0].read_text() == PTH_LINE


def test_unset_costs_nothing_and_changes_nothing():
    rc, report, ours, _ = _probe()
    assert rc == 0 and ours == []
    assert report["at_start"] == {"torch": False, "wrapt": False}
    assert report["gate"] is False and report["patched"] is False and report["base"] is None


def test_set_switches_on_for_the_process_and_nested_block_wins():
    rc, report, ours, _ = _probe(INDUCTOR_SM_OVERRIDE="1")
    assert rc == 0 and ours == []
    assert report["at_start"] == {"torch": False, "wrapt": False}  # nothing loaded at start
    assert report["gate"] is True and report["patched"] is True
    assert report["nested_64"] is False and report["after_nested"] is True
    assert report["base"]["source"] == "environment: INDUCTOR_SM_OVERRIDE=1"


def test_set_but_torch_never_imported_loads_nothing():
    rc, report, ours, _ = _probe("--no-torch", INDUCTOR_SM_OVERRIDE="1")
    assert rc == 0 and ours == []
    assert report["torch_imported"] is False and report["wrapt_imported"] is False


@pytest.mark.parametrize("word", ["0", "off", "FALSE", "no"])
def test_switch_off_leaves_everything_plain(word):
    rc, report, ours, _ = _probe(INDUCTOR_SM_OVERRIDE=word, INDUCTOR_SM_OVERRIDE_MIN_SMS="10")
    assert rc == 0 and ours == [] and report["gate"] is False and report["patched"] is False


@pytest.mark.parametrize("name, value", [
    ("INDUCTOR_SM_OVERRIDE", "maybe"),
    ("INDUCTOR_SM_OVERRIDE_MIN_SMS", "abc"),
    ("INDUCTOR_SM_OVERRIDE_BUDGET_S", "-5"),
    ("INDUCTOR_SM_OVERRIDE_MAX_CHOICES", "1.5"),
])
def test_bad_value_one_line_unpatched_exit_status_kept(name, value):
    env = {"INDUCTOR_SM_OVERRIDE": "1", name: value}
    rc, report, ours, _ = _probe("--exit", "3", **env)
    assert rc == 3  # the program ran on and exited with its own status
    assert len(ours) == 1 and name in ours[0] and repr(value) in ours[0]
    assert "expected" in ours[0] and "stays off" in ours[0]
    assert report["gate"] is False and report["patched"] is False and report["base"] is None


def test_strict_raises_when_inductor_is_imported():
    env = {"INDUCTOR_SM_OVERRIDE": "1", "INDUCTOR_SM_OVERRIDE_MIN_SMS": "abc",
           "INDUCTOR_SM_OVERRIDE_STRICT": "1"}
    rc, report, _ours, stderr = _probe(**env)
    assert rc != 0 and report is None
    assert "SettingsError" in stderr and "INDUCTOR_SM_OVERRIDE_MIN_SMS='abc'" in stderr
    rc, report, ours, _ = _probe("--no-torch", **env)  # no Inductor import: nothing raised
    assert rc == 0 and ours == []


def test_hook_never_raises_at_interpreter_start(tmp_path):
    """A broken package shadowing ours: the program still runs, silently."""
    shadow = tmp_path / "inductor_sm_override"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise RuntimeError('broken install')\n")
    env = _clean_env(INDUCTOR_SM_OVERRIDE="1", PYTHONPATH=str(tmp_path))
    code = "import torch, sys; print('ran'); sys.exit(5)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 5 and out.stdout.strip() == "ran"
    assert "broken install" not in out.stderr


def test_child_processes_get_the_override():
    rc, report, _, _ = _probe("--child", INDUCTOR_SM_OVERRIDE="1")
    assert rc == 0 and report["gate"] is True and report["child"]["gate"] is True


def test_run_launcher_sets_variables_and_passes_exit_status():
    out = subprocess.run([*CLI, "run", "--min-sms", "40", "--max-choices", "8", "--no-verify",
                          "--", sys.executable, PROBE, "--exit", "7"], env=_clean_env(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 7
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["gate"] is True  # 46 SMs >= 40
    settings = report["base"]
    assert (settings["min_sms"], settings["max_choices"], settings["verify"]) == (40, 8, False)


def test_run_launcher_passes_signals_through():
    code = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"
    out = subprocess.run([*CLI, "run", "--", sys.executable, "-c", code], env=_clean_env())
    assert out.returncode == -15


def test_run_launcher_rejects_bad_options_before_running():
    out = subprocess.run([*CLI, "run", "--min-sms", "-3", "--", "true"], env=_clean_env(),
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "argument --min-sms: '-3' is not accepted: expected an integer >= 0" in out.stderr


@pytest.mark.slow
def test_torchrun_two_ranks_each_get_the_override(tmp_path):
    env = _clean_env(INDUCTOR_SM_OVERRIDE="1", INDUCTOR_SM_OVERRIDE_MIN_SMS="40")
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          "--master_port=0", PROBE, "--rank-file", str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    ranks = sorted(tmp_path.glob("rank*.json"))
    assert [p.name for p in ranks] == ["rank0.json", "rank1.json"]
    for path in ranks:
        report = json.loads(path.read_text())
        assert report["gate"] is True and report["base"]["min_sms"] == 40


def test_hook_status_reports_variables_and_parse(tmp_path):
    env = _clean_env(INDUCTOR_SM_OVERRIDE="1", INDUCTOR_SM_OVERRIDE_MIN_SMS="x")
    out = subprocess.run([*CLI, "hook", "status", "--json"], env=env, capture_output=True,
                         text=True)
    info = json.loads(out.stdout)
    assert info["pth_installed"] is True and info["pth_current"] is True
    assert info["variables"]["INDUCTOR_SM_OVERRIDE_MIN_SMS"] == "x"
    assert "INDUCTOR_SM_OVERRIDE_MIN_SMS='x'" in info["error"]


def test_hook_install_uninstall_idempotent_and_refuses(tmp_path, monkeypatch):
    from inductor_sm_override.tools import launcher

    run = lambda *a: subprocess.run([*CLI, "hook", *a], capture_output=True, text=True)  # noqa: E731
    first = run("install", "--site-dir", str(tmp_path))
    second = run("install", "--site-dir", str(tmp_path))
    assert first.returncode == second.returncode == 0
    assert "installed:" in first.stdout and "already installed" in second.stdout
    assert (tmp_path / PTH_NAME).read_text() == PTH_LINE
    assert "removed:" in run("uninstall", "--site-dir", str(tmp_path)).stdout
    assert "not installed" in run("uninstall", "--site-dir", str(tmp_path)).stdout
    monkeypatch.setattr(launcher.os, "access", lambda path, mode: False)
    with pytest.raises(PermissionError, match="no write permission"):
        launcher.install_pth(tmp_path)
    assert not (tmp_path / PTH_NAME).exists()


def test_env_layer_in_process_under_a_nested_block(fake_gpu):
    import torch._inductor.utils as utils

    iso_env.install_base(iso.Settings(min_sms=40), "environment: test")
    try:
        assert utils.is_big_gpu(0) is True
        with iso.override(min_sms=64):
            assert utils.is_big_gpu(0) is False
            assert iso.status()["active"]["min_sms"] == 64
        assert iso.status()["base"]["source"] == "environment: test"
        assert iso.status()["active"]["min_sms"] == 40
    finally:
        iso_env.uninstall_base()
    assert utils.is_big_gpu(0) is False and iso.status()["base"] is None


def _pip_env() -> dict[str, str]:
    """pip's environment: no PYTHONPATH (a checkout on it, with the *.egg-info an editable
    install leaves, makes pip think the package is installed, and it installs nothing)."""
    return {k: v for k, v in _clean_env().items() if k != "PYTHONPATH"}


def _venv_with(tmp_path: Path, name: str, install: list[str]) -> str:
    venv = tmp_path / name
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    if install:
        subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", *install],
                       check=True, capture_output=True, env=_pip_env())
    return python


def _source_copy(tmp_path: Path) -> Path:
    """The checkout without its build artifacts: every install builds from this copy, so
    the checkout is never written (no *.egg-info, build/ or dist/ left in it)."""
    return Path(shutil.copytree(HERE.parent, tmp_path / "src", ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache")))


def _build_artifacts(root: Path) -> dict[str, int]:
    """What a pip build writes into a source tree: path -> mtime (ns)."""
    found = [p for pattern in ("*.egg-info", "build", "dist") for p in root.glob(pattern)]
    return {str(f): f.stat().st_mtime_ns for p in found for f in [p, *p.rglob("*")]}


def _deps_path() -> str:
    import torch
    import wrapt

    return os.pathsep.join({str(Path(m.__file__).parents[1]) for m in (torch, wrapt)})


@pytest.mark.slow
@pytest.mark.parametrize("how", ["wheel", "editable", "target+hook install"])
def test_install_paths_ship_a_working_hook(tmp_path, how):
    """Each path installs from a copy of the checkout and leaves the checkout as it was
    (a second run, with PYTHONPATH pointing at the checkout, works too)."""
    before = _build_artifacts(HERE.parent)
    repo = str(_source_copy(tmp_path))
    if how == "wheel":
        # An isolated build (pyproject's build-system requires), as a new user's `pip wheel`
        # does: the running venv may lack `wheel` and have a setuptools without bdist_wheel.
        built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                                "-w", str(tmp_path / "dist"), repo],
                               capture_output=True, text=True, env=_pip_env())
        assert built.returncode == 0, built.stderr[-2000:]
        python = _venv_with(tmp_path, "v", [str(next((tmp_path / "dist").glob("*.whl")))])
    elif how == "editable":
        python = _venv_with(tmp_path, "v", ["-e", repo])
    else:
        python = _venv_with(tmp_path, "v", [])
        target = tmp_path / "target"
        subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps",
                        "--target", str(target), repo], check=True,
                       capture_output=True, env=_pip_env())
        site_dir = subprocess.run([python, "-c", "import sysconfig; "
                                   "print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True).stdout.strip()
        (Path(site_dir) / "target.pth").write_text(str(target) + "\n")  # package on sys.path
        out = subprocess.run([python, "-m", "inductor_sm_override", "hook", "install"],
                             capture_output=True, text=True, env=_clean_env(
                                 PYTHONPATH=_deps_path()))
        assert out.returncode == 0 and "installed:" in out.stdout, out.stderr
    rc, report, ours, stderr = _probe(python=python, INDUCTOR_SM_OVERRIDE="1",
                                      PYTHONPATH=_deps_path())
    assert rc == 0, stderr[-2000:]
    assert report["gate"] is True and report["patched"] is True and ours == []
    assert _build_artifacts(HERE.parent) == before  # the checkout is left as it was


def test_build_artifacts_sees_what_a_build_leaves(tmp_path):
    """The helper the install test trusts: it notices an *.egg-info appearing or changing."""
    assert _build_artifacts(tmp_path) == {}
    (tmp_path / "pkg.egg-info").mkdir()
    (tmp_path / "pkg.egg-info" / "PKG-INFO").write_text("a")
    seen = _build_artifacts(tmp_path)
    assert sorted(Path(p).name for p in seen) == ["PKG-INFO", "pkg.egg-info"]


# --- issue 28: near-miss names, the report variable checked at start ------------------------

@pytest.mark.parametrize("name, meant", [
    ("INDUCTOR_SM_OVERIDE", "INDUCTOR_SM_OVERRIDE"),
    ("inductor_sm_override", "INDUCTOR_SM_OVERRIDE"),
    ("INDUCTOR_SMOVERRIDE_MAX_CHOICES", "INDUCTOR_SM_OVERRIDE_MAX_CHOICES"),
])
def test_near_miss_name_gets_one_line_at_start(name, meant):
    rc, report, ours, _ = _probe(**{name: "1"})
    assert rc == 0 and report["gate"] is False and report["patched"] is False
    assert ours == [f"inductor_sm_override: {name} is not a variable of this package "
                    f"(ignored): did you mean {meant}?"]


def test_pth_line_stays_unarmed_for_unrelated_variables():
    """The widened test must not arm the finder for torch's and CUDA's own variables."""
    condition = PTH_LINE.rsplit(") if ", 1)[1].rsplit(" else None", 1)[0]
    env = {"TORCHINDUCTOR_FREEZING": "1", "CUDA_VISIBLE_DEVICES": "0", "PATH": "/bin",
           "TORCHINDUCTOR_MAX_AUTOTUNE_GEMM": "1", "SMTP_SERVER": "x", "OVERRIDE_ME": "1"}
    assert eval(condition, {"os": type("os", (), {"environ": env})}) is False
    for name in ("INDUCTOR_SM_OVERRIDE", "inductor_sm_override", "INDUCTOR_SM_OVERIDE",
                 "INDUCTR_SM_OVERRIDE_MIN_SMS"):
        assert eval(condition, {"os": type("os", (), {"environ": {**env, name: "1"}})})


def test_hook_status_doctor_and_run_name_near_misses(monkeypatch, capsys):
    from inductor_sm_override.tools import cli, doctor, launcher

    monkeypatch.setenv("INDUCTOR_SM_OVERIDE", "1")
    line = ("INDUCTOR_SM_OVERIDE is not a variable of this package (ignored): did you mean "
            "INDUCTOR_SM_OVERRIDE?")
    assert cli.main(["hook", "status"]) == 0
    assert f"warning: {line}" in capsys.readouterr().out
    assert launcher.hook_status(os.environ)["near_misses"] == {
        "INDUCTOR_SM_OVERIDE": "INDUCTOR_SM_OVERRIDE"}
    assert f"warning: {line}" in doctor.format_text(doctor.collect())
    seen = {}
    monkeypatch.setattr(launcher, "exec_command", lambda cmd, env: seen.update(env=env))
    assert cli.main(["run", "--", "true"]) == 0 and seen
    assert capsys.readouterr().err.strip() == f"inductor-sm-override run: warning: {line}"


def test_report_variable_that_is_a_folder_is_one_line_at_start(tmp_path):
    rc, report, ours, _ = _probe("--exit", "3", INDUCTOR_SM_OVERRIDE="1",
                                 INDUCTOR_SM_OVERRIDE_REPORT=str(tmp_path))
    assert rc == 3 and report["patched"] is False
    assert ours == [f"inductor_sm_override: INDUCTOR_SM_OVERRIDE_REPORT={str(tmp_path)!r} is "
                    f"not accepted: {tmp_path} is a folder, not a file; the override stays off"]
