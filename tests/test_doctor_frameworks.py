"""`doctor`'s framework lines: installed version, and whether its compile reaches the override."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from inductor_sm_override.tools import doctor, frameworks
from inductor_sm_override.tools.frameworks import detect, format_line, mode_autotunes_gemms

CLI = [sys.executable, "-m", "inductor_sm_override"]


@pytest.mark.parametrize("mode, expected", [
    (None, False), ("default", False), ("reduce-overhead", False),
    ("max-autotune", True), ("max-autotune-no-cudagraphs", True),
])
def test_which_modes_autotune_gemms(mode, expected):
    assert mode_autotunes_gemms(mode, {}) is expected


def test_inductor_env_switch_makes_every_mode_autotune():
    assert mode_autotunes_gemms("reduce-overhead", {"TORCHINDUCTOR_MAX_AUTOTUNE_GEMM": "1"})
    assert mode_autotunes_gemms(None, {"TORCHINDUCTOR_MAX_AUTOTUNE": "1"})
    assert not mode_autotunes_gemms(None, {"TORCHINDUCTOR_MAX_AUTOTUNE": "0"})


def _versions(**installed: str):
    return lambda name: installed.get(name)


def _by_name(entries):
    return {e["name"]: e for e in entries}


def test_only_installed_frameworks_are_listed_with_their_version():
    found = _by_name(detect({}, _versions(transformers="5.1.0", **{"pytorch-lightning": "2.4.0"})))
    assert set(found) == {"transformers", "lightning"}
    assert found["lightning"]["distribution"] == "pytorch-lightning"
    assert found["lightning"]["version"] == "2.4.0" and found["lightning"]["reaches"] is None
    assert detect({}, _versions()) == []


def test_trainer_and_accelerate_default_mode_does_not_reach_the_override():
    everything = _versions(transformers="5", accelerate="1", vllm="0.11", sglang="0.5")
    found = _by_name(detect({}, everything))
    assert found["transformers"]["reaches"] is False and "'default'" in \
        found["transformers"]["detail"]
    assert found["accelerate"]["reaches"] is False
    found = _by_name(detect({"ACCELERATE_DYNAMO_MODE": "max-autotune"}, everything))
    assert found["transformers"]["reaches"] is True and found["accelerate"]["reaches"] is True
    found = _by_name(detect({"ACCELERATE_DYNAMO_MODE": "reduce-overhead"}, everything))
    assert found["accelerate"]["reaches"] is False


def test_server_settings_decide():
    servers = _versions(vllm="0.11", sglang="0.5")
    found = _by_name(detect({}, servers))
    assert found["vllm"]["reaches"] is True and "compile_sizes" in found["vllm"]["detail"]
    assert found["sglang"]["reaches"] is True  # its default mode is max-autotune-no-cudagraphs
    found = _by_name(detect({"VLLM_ENABLE_INDUCTOR_MAX_AUTOTUNE": "0",
                             "SGLANG_TORCH_COMPILE_MODE": "reduce-overhead"}, servers))
    assert found["vllm"]["reaches"] is False and found["sglang"]["reaches"] is False


def test_a_failing_check_is_reported_not_raised(monkeypatch):
    def broken(environ):
        raise RuntimeError("boom")

    monkeypatch.setattr(frameworks, "FRAMEWORKS", (*frameworks.FRAMEWORKS[:1],
                                                   (("vllm",), "vllm", broken)))
    found = _by_name(detect({}, _versions(vllm="0.11", transformers="5")))
    assert found["vllm"]["reaches"] is None and "boom" in found["vllm"]["detail"]
    assert found["transformers"]["reaches"] is False
    failing = detect({}, lambda name: (_ for _ in ()).throw(ValueError("metadata")))
    assert failing == []  # a broken metadata lookup hides the framework, never raises


def test_version_lookup_never_raises():
    assert frameworks.installed_version("surely-not-an-installed-distribution-x") is None


def test_format_text_has_a_line_per_framework_or_says_none():
    info = doctor.collect()
    text = doctor.format_text({**info, "frameworks": []})
    assert "frameworks: none of transformers" in text
    entry = {"name": "vllm", "version": "0.11", "reaches": False, "detail": "d"}
    assert format_line(entry) == ("framework vllm 0.11: as set up now, does NOT reach the "
                                  "override: d")
    text = doctor.format_text({**info, "frameworks": [entry]})
    assert text.splitlines()[-1] == format_line(entry)


def test_doctor_cli_reports_installed_frameworks_and_follows_the_environment():
    pytest.importorskip("transformers")
    from importlib.metadata import version

    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_DYNAMO")}
    out = subprocess.run([*CLI, "doctor"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("framework transformers"))
    assert version("transformers") in line and "does NOT reach" in line
    env["ACCELERATE_DYNAMO_MODE"] = "max-autotune"
    out = subprocess.run([*CLI, "doctor", "--json"], env=env, capture_output=True, text=True,
                         timeout=300)
    found = _by_name(json.loads(out.stdout)["frameworks"])
    assert found["transformers"]["reaches"] is True
    assert found["transformers"]["version"] == version("transformers")
