"""`report` reads any file (issue 28): a table or one error line, exit 0 or 2, never a
traceback; rejected choices with their reasons; a plot that reads at a glance."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inductor_sm_override.tools import cli, report

CLI = [sys.executable, "-m", "inductor_sm_override"]
REASON = ("mismatch vs extern _mkl_linear: 2048 of 2048 values off by up to 2.1 "
          "(atol 0.00582, rtol 0.01)")
OP = {"event": "autotune", "name": "packed_linear", "device": "cpu",
      "shapes": [[16, 64], [1982689, 1], [128, 64]], "offered": ["cpp_0", "_mkl_linear"],
      "externs": ["_mkl_linear"], "timings": {"_mkl_linear": 0.0179, "cpp_0": None},
      "winner": "_mkl_linear", "capped": [], "budget_dropped": [],
      "rejected": {"cpp_0": REASON}, "rejected_by": {"cpp_0": "check"}, "seconds": 4.89}
WON = {**OP, "shapes": [[16, 128], [32, 128]], "offered": ["cpp_1", "cpp_2", "_mkl_linear"],
       "timings": {"_mkl_linear": 0.0152, "cpp_1": 0.0071, "cpp_2": 0.0093}, "winner": "cpp_1",
       "capped": ["cpp_3", "cpp_4"], "budget_dropped": ["cpp_5"], "rejected": {},
       "rejected_by": {}}


def _main(*args: str) -> tuple[int, str, str]:
    """``cli.main`` in this process, stdout a strict UTF-8 stream as a terminal's is."""
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8", errors="strict")
    err = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(args))
        except SystemExit as exc:
            code = exc.code
        out.flush()
    return code, raw.getvalue().decode(), err.getvalue()


def _write(path, *lines) -> str:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(path)


# --- item 1: a file with no valid event is one error line, exit 2 ---------------------------

@pytest.mark.parametrize("content", [b"", b"\n\n  \n", b"[1, 2]\n", b"{\"no\": 1}\n"])
def test_no_valid_event_is_one_error_line(tmp_path, content):
    path = tmp_path / "r.jsonl"
    path.write_bytes(content)
    for extra in ([], ["--json"]):
        code, out, err = _main("report", str(path), *extra)
        assert code == 2 and out == ""
        (line,) = err.strip().splitlines()
        assert line.startswith(f"inductor-sm-override report: {path} ")
        assert "no report event" in line


def test_dev_null_is_one_error_line():
    code, out, err = _main("report", os.devnull)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1


# --- item 2: wrong field types never trace back ----------------------------------------------

@pytest.mark.parametrize("event", [
    {"event": "autotune", "name": 5, "timings": "x"},
    {"event": "autotune", "timings": {"a": "x"}},
    {"event": "autotune", "shapes": 5},
    {"event": "autotune", "externs": 5, "offered": [[1]], "winner": [1]},
    {"event": "autotune", "seconds": 10 ** 400, "timings": {"a": 10 ** 400}},
    {"event": "cache_hit", "producer": "x", "reasons": 5},
    {"event": "autotune", "winner": "a", "unverified": True, "notes": [1, None]},
    {"event": "autotune", "winner": [1], "unverified": {"a": 1}},
    {"event": "fleet", "waited_s": "x", "group": [1], "detail": 3},
    {"event": 7},
])
def test_wrong_field_types_give_a_table_not_a_traceback(tmp_path, event):
    path = _write(tmp_path / "r.jsonl", {"event": "start"}, event)
    for extra in ([], ["--json"]):
        code, out, err = _main("report", path, *extra)
        assert code == 0, err
        assert out.strip() and len(err.strip().splitlines()) <= 1


def test_events_as_the_package_writes_them_are_all_read(tmp_path):
    """The type checks never skip a real event (a cache hit's "unverified" is a bool)."""
    hit = {"event": "cache_hit", "key": "k", "source": "local", "producer": None, "ops": None,
           "manifest_sha256": None, "unverified": True, "reasons": ["no manifest"],
           "backward": False, "time_saved_s": None, "settings": {}, "settings_key": "s"}
    fleet = {"event": "fleet", "scope": "job", "group": "job", "role": "follower", "rank": 1,
             "leader": "rank 0", "store": None, "op": "mm", "key": None, "outcome": "hit",
             "winner": "mm", "source": None, "tuned_by": 0, "wait_end": "leader_done",
             "waited_s": 1.5, "detail": ""}
    gate = {"event": "gate", "device": "cuda:0", "sms": 46, "threshold": 0, "answer": True}
    fallback = {"event": "fallback", "used": "plain", "reason": "x", "checks": [{}]}
    path = _write(tmp_path / "r.jsonl", {"event": "start", "rank": None, "device": "cpu"}, OP,
                  WON, hit, {**hit, "unverified": False, "producer": {"host": "h"}}, fleet,
                  gate, fallback)
    events, errors = report.read_events(path)
    assert errors == [] and len(events) == 8
    assert report.summarize(events)["totals"]["unverified_hits"] == 1


def test_bad_lines_are_counted_in_one_line_and_exit_0(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(OP) + "\n" + "{oops\n" * 12
                    + json.dumps({"event": "autotune", "timings": "x"}) + "\n")
    code, out, err = _main("report", str(path))
    assert code == 0 and "total: 1 op," in out
    (line,) = err.strip().splitlines()
    assert line.startswith("inductor-sm-override report: 13 lines skipped")
    assert f"{path}:2: not valid JSON" in line  # the first problem, named


# --- item 6: the reasons in the table and --json ---------------------------------------------

def test_table_shows_each_rejected_choice_with_its_short_reason_and_the_winner():
    table = report.format_table(report.summarize([OP, WON]))
    lines = table.splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("packed_linear"))
    assert "_mkl_linear" in lines[row]  # the winner column
    assert lines[row + 1].split() == ["rejected", "cpp_0", "(check):", "mismatch", "vs",
                                      "extern", "_mkl_linear:", "2048", "of", "2048",
                                      "values", "off", "by", "up", "to", "2.1"]
    assert "cpp_1" in lines[row + 2]  # the next op's row: no rejected line for it


def test_json_carries_reasons_and_who_rejected(tmp_path):
    path = _write(tmp_path / "r.jsonl", OP, WON)
    _code, out, _ = _main("report", path, "--json")
    first, second = json.loads(out)["ops"]
    assert first["winner"] == "_mkl_linear" and second["winner"] == "cpp_1"
    assert first["reasons"] == {"cpp_0": REASON} and first["rejected_by"] == {"cpp_0": "check"}


def test_many_rejections_are_capped_in_the_table():
    many = {**OP, "rejected": {f"t{i}": "crashed" for i in range(9)},
            "rejected_by": {f"t{i}": "crash" for i in range(9)}}
    table = report.format_table(report.summarize([many]))
    assert table.count("rejected t") == report.MAX_REJECTED_SHOWN
    assert f"and {9 - report.MAX_REJECTED_SHOWN} more rejected (--json lists all)" in table


# --- item 7: the plot, read from matplotlib's artists ----------------------------------------

def _texts(fig) -> list[str]:
    found = [t.get_text() for ax in fig.axes for t in ax.get_xticklabels()]
    found += [t.get_text() for t in fig.texts]
    found += [t.get_text() for ax in fig.axes for t in ax.texts]
    return found


def test_plot_groups_winner_rejected_and_counts_are_drawn():
    fig = report.figure([{"event": "start"}, OP, WON])
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[0].splitlines()[:2] == ["packed_linear", "16x64"]
    assert labels[1].splitlines()[:2] == ["packed_linear", "16x128"]
    assert "2 capped, 1 budget-dropped" in labels[1]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["template", "extern (ATen)", "winner", "rejected (reason below)"]
    by_label = {c.get_label(): c for c in ax.collections}
    winners = by_label["winner"].get_offsets()
    assert [tuple(p) for p in winners] == [(0.0, 0.0179), (1.0, 0.0071)]  # one star per op
    rejected = by_label["rejected (reason below)"].get_offsets()
    assert len(rejected) == 1 and rejected[0][0] == pytest.approx(0.0, abs=0.5)
    note = "\n".join(fig.texts[i].get_text() for i in range(len(fig.texts)))
    assert "cpp_0 (check): mismatch vs extern _mkl_linear" in note
    ticks = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert ticks and all("10^" not in t and "$" not in t and "times" not in t for t in ticks)
    for tick in ticks:
        float(tick)  # plain numbers (ms)
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_plot_text_is_never_parsed_as_mathtext(tmp_path):
    odd = {**WON, "name": "$\\frac{a}{$", "winner": "cpp_1"}
    out = tmp_path / "t.png"
    report.plot([odd], str(out))
    assert out.read_bytes()[:4] == b"\x89PNG"


# --- the property: any bytes or JSONL ----------------------------------------------------------

KINDS = ["autotune", "cache_hit", "cache_refused", "fleet", "gate", "fallback", "start",
         "choice", "fusion", "other"]
FIELDS = ["name", "device", "shapes", "offered", "externs", "timings", "winner", "capped",
          "budget_dropped", "rejected", "rejected_by", "unverified", "seconds", "notes",
          "winner_unchecked", "source", "producer", "reasons", "key", "unverified", "group",
          "rank", "role", "leader", "outcome", "wait_end", "waited_s", "detail", "used",
          "reason", "answer", "sms", "threshold"]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats()
    | st.text(max_size=12) | st.sampled_from(["\ud800", "$x$", "cpu", "_mkl_linear"]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=6) | st.sampled_from(["cpp_0", "_mkl_linear"]), inner,
                      max_size=4),
    max_leaves=12)
EVENT = st.fixed_dictionaries({"event": st.sampled_from(KINDS) | JSON},
                              optional={f: JSON for f in FIELDS})
LINE = st.one_of(
    EVENT.map(lambda e: json.dumps(e).encode()),
    st.sampled_from([OP, WON]).map(lambda e: json.dumps(e).encode()),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=40),
    st.sampled_from([b"1" * 5000, b"[" * 5000, b'{"event": "autotune"', b"\xff\xfe",
                     b"[" * 100 + b"]" * 100, b'{"event":"autotune","timings":{"a":NaN}}',
                     b'{"event": "cache_hit", "ops": ' + b"[" * 900 + b"]" * 900 + b"}"]),
)
FILES = st.one_of(st.binary(max_size=300), st.lists(LINE, max_size=8).map(b"\n".join))
PROPERTY = settings(max_examples=300, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


def _check(path, content: bytes, extra: list[str]) -> None:
    path.write_bytes(content)
    code, out, err = _main("report", str(path), *extra)
    lines = [ln for ln in err.splitlines() if not ln.startswith("plot: ")]
    assert "Traceback" not in err and "Warning" not in err, err
    if code == 2:  # one error line, nothing else
        assert out == "" and len(lines) == 1 and lines[0].startswith(
            "inductor-sm-override report: "), err
        return
    assert code == 0, err
    assert len(lines) <= 1 and all("skipped" in ln for ln in lines), err
    if "--json" in extra:
        assert json.loads(out)["totals"]["ops"] >= 0
    else:
        assert out.startswith("op ") and "total: " in out


@PROPERTY
@given(content=FILES, as_json=st.booleans())
def test_any_input_gives_a_table_or_one_error_line(tmp_path, content, as_json):
    _check(tmp_path / "any.jsonl", content, ["--json"] if as_json else [])


@PROPERTY
@given(event=st.fixed_dictionaries({}, optional={f: JSON for f in FIELDS}))
def test_op_summary_and_progress_line_take_any_field_types(event):
    """The live progress line and the table's rows read an event of any shape."""
    from inductor_sm_override.core.events import op_summary, progress_line

    summary = op_summary({"event": "autotune", **event})
    assert isinstance(summary["name"], str) and summary["run"] >= 0
    assert progress_line(event).startswith("inductor_sm_override: ")


@settings(PROPERTY, max_examples=40)
@given(content=st.lists(LINE, max_size=6).map(b"\n".join))
def test_any_input_gives_a_plot_or_one_error_line(tmp_path, content):
    _check(tmp_path / "any.jsonl", content, ["--plot", str(tmp_path / "any.png")])


# --- item 3: a closed pipe ends quietly --------------------------------------------------------

def test_closed_pipe_ends_quietly(tmp_path):
    path = _write(tmp_path / "big.jsonl", *[WON] * 3000)  # far more than a pipe holds
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDUCTOR_SM_OVERRIDE")}
    for extra in ([], ["--json"]):
        proc = subprocess.Popen([*CLI, "report", path, *extra], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env)
        assert proc.stdout.readline()
        proc.stdout.close()  # as `| head -1` does
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == 0 and err == "", err
