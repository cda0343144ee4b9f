"""Report, progress and the CLI, run as a user would (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "inductor_sm_override"]
FAKE_46 = textwrap.dedent("""
    import sys
    from inductor_sm_override.testing import fake_cuda_device
    from inductor_sm_override.tools.cli import main
    with fake_cuda_device(46, name="NVIDIA GeForce RTX 4070"):
        code = main(sys.argv[1:])
    sys.exit(code)
""")
COMPILE = textwrap.dedent("""
    import sys, torch, torch._inductor.config as config
    import inductor_sm_override as iso
    report, quiet = sys.argv[1], {"none": None, "1": True, "0": False}[sys.argv[2]]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 32)).eval()
    x = torch.randn(16, 64)
    with torch.no_grad(), config.patch(freezing=True), iso.override(report=report,
                                                                      quiet=quiet):
        torch.compile(model, mode="max-autotune-no-cudagraphs")(x)
""")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("INDUCTOR_SM_OVERRIDE")}


def _run(args: list[str], **kw):
    return subprocess.run(args, capture_output=True, text=True, env=_env(), timeout=600, **kw)


def test_doctor_text_with_a_faked_46_sm_gpu():
    out = _run([sys.executable, "-c", FAKE_46, "doctor", "--min-sms", "50"])
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "torch support: supported" in text
    assert "GPU 0: NVIDIA GeForce RTX 4070, 46 SMs" in text
    assert "torch: gated, override: templates, min_sms=50: gated" in text
    assert "torch._inductor.utils.is_big_gpu" in text and "start-up hook:" in text
    assert "max_autotune_gemm_backends=" in text


def test_doctor_json_with_a_faked_46_sm_gpu():
    out = _run([sys.executable, "-c", FAKE_46, "doctor", "--json", "--min-sms", "40"])
    info = json.loads(out.stdout)
    (gpu,) = info["gpus"]
    assert gpu["sms"] == 46
    assert gpu["gate"] == {"torch": False, "override": True, "min_sms=40": True}
    assert info["support"]["supported"] is True and info["hook"]["pth_installed"] is True
    assert "max_autotune_gemm_search_space" in info["inductor_config"]


def test_doctor_lists_the_gpus_it_sees():
    import torch

    out = _run([*CLI, "doctor"])
    assert out.returncode == 0
    if not torch.cuda.is_available():
        assert "GPUs: none visible" in out.stdout
        return
    assert "GPUs: none visible" not in out.stdout  # a GPU host: each GPU is named
    for index in range(torch.cuda.device_count()):
        assert torch.cuda.get_device_properties(index).name in out.stdout


@pytest.fixture(scope="module")
def compiled_report(tmp_path_factory):
    """One real CPU compile writing a report, with progress forced on."""
    path = tmp_path_factory.mktemp("report") / "iso.jsonl"
    out = _run([sys.executable, "-c", COMPILE, str(path), "0"])
    assert out.returncode == 0, out.stderr[-3000:]
    return path, out.stderr


def test_report_events_and_pandas(compiled_report):
    import pandas as pd

    path, _ = compiled_report
    events = [json.loads(line) for line in path.read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds.count("autotune") == 2
    start = events[0]
    assert start["torch"] and start["python"] and start["package"] and "settings" in start
    for event in (e for e in events if e["event"] == "autotune"):
        assert event["name"] == "packed_linear" and event["winner"] in event["timings"]
        assert set(event) >= {"shapes", "dtypes", "timings", "rejected", "capped", "seconds"}
    frame = pd.read_json(path, lines=True)
    assert list(frame["event"]).count("autotune") == 2


def test_progress_lines_appear_and_quiet_silences_them(compiled_report, tmp_path):
    _path, stderr = compiled_report
    lines = [ln for ln in stderr.splitlines() if ln.startswith("inductor_sm_override: packed")]
    assert len(lines) == 2 and "choices" in lines[0] and "winner" in lines[0]
    assert "AUTOTUNE packed_linear" in stderr and "Autotune Choices Stats" in stderr
    quiet = _run([sys.executable, "-c", COMPILE, str(tmp_path / "q.jsonl"), "1"])
    assert quiet.returncode == 0
    assert not [ln for ln in quiet.stderr.splitlines() if ln.startswith("inductor_sm_override:")]
    # quiet=True also keeps torch's own autotune tables and its TypedStorage warning off
    for torch_line in ("AUTOTUNE", "Autotune Choices Stats", "TypedStorage is deprecated"):
        assert torch_line not in quiet.stderr, quiet.stderr[-2000:]


def test_report_table_json_and_plot(compiled_report, tmp_path):
    path, _ = compiled_report
    table = _run([*CLI, "report", str(path)])
    assert table.returncode == 0, table.stderr
    assert "packed_linear" in table.stdout and "total: 2 ops" in table.stdout
    as_json = json.loads(_run([*CLI, "report", str(path), "--json"]).stdout)
    assert as_json["totals"]["ops"] == 2 and len(as_json["ops"]) == 2
    png = tmp_path / "timings.png"
    plotted = _run([*CLI, "report", str(path), "--plot", str(png)])
    assert plotted.returncode == 0, plotted.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_malformed_line_is_named_and_the_rest_is_shown(compiled_report, tmp_path):
    path, _ = compiled_report
    lines = path.read_text().splitlines()
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    out = _run([*CLI, "report", str(broken)])
    assert out.returncode == 0  # valid events make the table; the bad line is counted
    assert f"1 line skipped: {broken}:2: not valid JSON" in out.stderr
    assert "total: 2 ops" in out.stdout


def test_concurrent_appends_keep_lines_whole(tmp_path):
    """Threads and processes appending to one report never interleave a line."""
    path = tmp_path / "shared.jsonl"
    code = textwrap.dedent(f"""
        import threading
        from inductor_sm_override.core.events import publish as emit
        from inductor_sm_override.core.settings import Settings
        s = Settings(report={str(path)!r})
        def work():
            for i in range(200):
                emit(s, {{"event": "autotune", "name": "x" * 500, "i": i}})
        threads = [threading.Thread(target=work) for _ in range(4)]
        [t.start() for t in threads]; [t.join() for t in threads]
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], env=_env()) for _ in range(3)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert sum(e["event"] == "autotune" for e in events) == 3 * 4 * 200
    assert sum(e["event"] == "start" for e in events) == 3


def test_rank_placeholder_gives_one_file_per_rank(tmp_path):
    from inductor_sm_override.core.events import resolve_path

    os.environ["RANK"] = "3"
    try:
        assert resolve_path(str(tmp_path / "r{rank}.jsonl")) == str(tmp_path / "r3.jsonl")
    finally:
        del os.environ["RANK"]


def test_help_on_each_command():
    for command in ("run", "hook", "demo", "doctor", "report", "status"):
        out = _run([*CLI, command, "--help"])
        assert out.returncode == 0 and "usage: inductor-sm-override" in out.stdout


def test_report_of_missing_file_is_a_clear_error(tmp_path):
    out = _run([*CLI, "report", str(tmp_path / "nope.jsonl")])
    assert out.returncode == 2 and "cannot read" in out.stderr
    assert Path(tmp_path / "nope.jsonl").exists() is False


def test_gate_event_in_the_report_once_per_decision(fake_gpu, tmp_path):
    import torch._inductor.utils as utils

    import inductor_sm_override as iso

    path = tmp_path / "gate.jsonl"
    with iso.override(report=str(path), quiet=True):
        for _ in range(3):
            assert utils.is_big_gpu(0) is True
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["event"] for e in events] == ["start", "gate"]
    gate = events[1]
    assert (gate["device"], gate["sms"], gate["threshold"]) == ("cuda:0", 46, 0)
    assert gate["torch_answer"] is False and gate["answer"] is True


# --- issue 13: friction and cache hits -------------------------------------------------------

def _event(**kw):
    base = {"event": "autotune", "name": "mm", "device": "cpu", "shapes": [[4, 4]],
            "externs": ["mm"], "timings": {"mm": 1.0, "tpl": 0.5}, "winner": "tpl",
            "capped": [], "budget_dropped": [], "rejected": {}, "seconds": 0.1}
    return {**base, **kw}


def test_capped_and_budget_dropped_are_separate_columns():
    from inductor_sm_override.tools.report import format_table, summarize

    summary = summarize([_event(capped=["a", "b"], budget_dropped=["c"])])
    op = summary["ops"][0]
    assert (op["capped"], op["budget_dropped"]) == (2, 1)
    assert (summary["totals"]["capped"], summary["totals"]["budget_dropped"]) == (2, 1)
    table = format_table(summary)
    header = table.splitlines()[0]
    columns = header.split()
    assert "capped" in columns and "budget" in columns
    assert "2 capped, 1 dropped by the budget" in table


def test_cpu_speedups_come_with_a_noise_note():
    from inductor_sm_override.tools.report import format_table, summarize

    table = format_table(summarize([_event(timings={"mm": 1289.81, "tpl": 1.0})]))
    assert "1289.81x" in table and "noise" in table
    gpu = format_table(summarize([_event(device="cuda:0")]))
    assert "noise" not in gpu


TRAIN = textwrap.dedent("""
    import sys, torch
    import inductor_sm_override as iso
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 16))
    with iso.override(report=sys.argv[1], quiet=True):
        torch.compile(model, mode="max-autotune-no-cudagraphs")(torch.randn(8, 32)).sum().backward()
""")


def test_report_counts_cache_hits(tmp_path):
    """Case 8: the same training script run twice (one Inductor cache): the second run is
    served from the FX graph cache; its report says so instead of going quietly empty."""
    env = {**_env(), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor-cache")}
    runs = []
    for name in ("first.jsonl", "second.jsonl"):
        out = subprocess.run([sys.executable, "-c", TRAIN, str(tmp_path / name)],
                             capture_output=True, text=True, env=env, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        runs.append([json.loads(line) for line in (tmp_path / name).read_text().splitlines()])
    first, second = runs
    assert [e for e in first if e["event"] == "autotune"]
    assert not [e for e in first if e["event"] == "cache_hit"]
    hits = [e for e in second if e["event"] == "cache_hit"]
    assert len(hits) == 2 and not [e for e in second if e["event"] == "autotune"]
    assert {e["backward"] for e in hits} == {False, True}
    assert hits[0]["key"] and hits[0]["settings"]["verify"] is True
    table = _run([*CLI, "report", str(tmp_path / "second.jsonl")])
    assert "2 graphs loaded from cache (autotuned earlier under the same settings)" \
        in table.stdout
    assert "graphs loaded from cache" not in _run([*CLI, "report",
                                                   str(tmp_path / "first.jsonl")]).stdout


def test_run_help_describes_every_option():
    out = _run([*CLI, "run", "--help"])
    text = " ".join(out.stdout.split())
    for option in ("--min-sms N", "--max-choices N", "--budget-s SECONDS", "--no-verify",
                   "--rtol X", "--atol X", "--report PATH", "--simulate-sms N",
                   "--search-space", "--strict", "--quiet"):
        start = text.index(option)
        following = text[start + len(option):start + len(option) + 40]
        assert not following.lstrip().startswith("-"), f"{option} has no help text"
    assert "seconds" in text and "default" in text


def test_hook_help_has_a_description_and_status_fails_on_a_bad_variable():
    out = _run([*CLI, "hook", "--help"])
    assert ".pth" in out.stdout and "start-up hook" in out.stdout
    env = {**_env(), "INDUCTOR_SM_OVERRIDE": "1", "INDUCTOR_SM_OVERRIDE_MAX_CHOICES": "many"}
    bad = subprocess.run([*CLI, "hook", "status"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert bad.returncode == 1 and "error:" in bad.stdout
    bad_json = subprocess.run([*CLI, "hook", "status", "--json"], capture_output=True,
                              text=True, env=env, timeout=120)
    assert bad_json.returncode == 1 and json.loads(bad_json.stdout)["error"]
    good = _run([*CLI, "hook", "status"])
    assert good.returncode == 0


def test_symbolic_sizes_are_recorded_as_strings():
    """Dynamic shapes: a decision's shapes hold "s0" for a symbolic size, never None."""
    import sympy
    import torch

    from inductor_sm_override.core.settings import Settings
    from inductor_sm_override.hooks.selector import _open_op

    class Node:
        def get_size(self):
            return [sympy.Symbol("s0"), sympy.Integer(64)]

        def get_dtype(self):
            return torch.float32

    record = _open_op("mm", [Node(), Node()], None, Settings())
    assert record.shapes == [["s0", 64], ["s0", 64]]
