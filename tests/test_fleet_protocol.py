"""Shared autotune decisions, without a compile (issue 29): the decision key, the engines
(the group's torch store, the shared directory, Redis), the follower's bounded wait, and
what a rank does with a decision: Inductor's real selector with hand-made choices
(tests/selector_harness.py). tests/test_fleet_torchrun.py runs it for real."""

from __future__ import annotations

import datetime
import json
import os
import socket
import threading
import time

import pytest
import torch
import torch.distributed as dist
from selector_harness import Template, extern, lowering, quiet_logging, select

import inductor_sm_override as iso
from inductor_sm_override.core.settings import Settings
from inductor_sm_override.fleet import decisions, engines
from inductor_sm_override.fleet import group as fleet_group
from inductor_sm_override.fleet.group import Group

LONG = 60.0  # a wait that reaches this has failed the test


@pytest.fixture(autouse=True)
def _fresh(monkeypatch, tmp_path):
    """Each test: its own Inductor cache dir (the shared directory), no torchrun variables,
    nothing remembered from another test."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "TORCHINDUCTOR_REDIS_HOST",
                 "TORCHINDUCTOR_REDIS_PORT", "TORCHINDUCTOR_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(engines, "POLL_S", 0.02)
    decisions.forget()
    decisions.clear_fleet_events()
    fleet_group.forget()
    iso.clear_decisions()
    with quiet_logging(monkeypatch):
        yield
    decisions.forget()
    decisions.clear_fleet_events()


# --- the key -------------------------------------------------------------------------------


def _graph_key(device: str) -> str:
    """Inductor's FX-graph-cache key of ``mm`` on fake inputs on ``device``."""
    from torch._inductor.codecache import compiled_fx_graph_hash
    from torch._subclasses.fake_tensor import FakeTensorMode

    gm = torch.fx.symbolic_trace(lambda a, b: torch.mm(a, b))
    with FakeTensorMode(allow_non_fake_inputs=True):
        a = torch.empty(64, 32, device=device, dtype=torch.float16)
        b = torch.empty(32, 16, device=device, dtype=torch.float16)
    return compiled_fx_graph_hash(gm, [a, b], {}, [])[0]


def _decision_key(index: int, settings: Settings, size: int = 64) -> str:
    from torch._inductor import ir

    cuda = torch.device("cuda", index)
    a = ir.InputBuffer(name=f"a{index}", layout=ir.FixedLayout(cuda, torch.float16, [size, 32]))
    b = ir.InputBuffer(name=f"b{index}", layout=ir.FixedLayout(cuda, torch.float16, [32, 16]))
    out = ir.FixedLayout(cuda, torch.float16, [size, 16])
    return decisions.decision_key("mm", [a, b], out, settings)


def test_decision_key_ignores_the_device_index_where_the_graph_key_does_not():
    # Inductor's graph key (FxGraphCachePickler, device_id_agnostic=False) has the index
    assert _graph_key("cuda:0") != _graph_key("cuda:1")
    settings = Settings(fleet="job")
    with iso.testing.fake_cuda_device(46, count=2):
        first, second = _decision_key(0, settings), _decision_key(1, settings)
        other_settings = _decision_key(1, Settings(fleet="job", max_choices=4))
        other_shape = _decision_key(1, settings, size=128)
        fleet_only = _decision_key(1, Settings(fleet="node", fleet_timeout_s=5.0))
    with iso.testing.fake_cuda_device(40, count=2):
        other_gpu = _decision_key(1, settings)
    assert first == second  # cuda:0 and cuda:1 of one device model: one decision
    assert fleet_only == first  # fleet and its timeout change no compiled code
    assert len({first, other_settings, other_shape, other_gpu}) == 4


# --- the wait ------------------------------------------------------------------------------


def _pair(store=None) -> tuple[Group, Group]:
    store = dist.PrefixStore("t/", store or dist.HashStore())
    return (Group("job", "job", 0, 2, store, "test"), Group("job", "job", 1, 2, store, "test"))


def _decision(choice: str = "x") -> dict:
    return {"choice": choice, "name": choice, "op": "mm", "by": {"rank": 0}}


def test_a_follower_waits_for_its_leaders_decision():
    leader, follower = _pair()
    timer = threading.Timer(0.3, engines.publish, (leader, "k1", _decision(), None))
    timer.start()
    found, end, waited = engines.wait(follower, "k1", LONG)
    timer.join()
    assert (found["choice"], end) == ("x", engines.FOUND) and 0.25 < waited < LONG
    assert int(leader.store.add(engines.MADE, 0)) == 1  # the leader counts what it published


def test_a_timed_out_wait_is_not_repeated_until_the_leader_publishes_again():
    leader, follower = _pair()
    assert engines.wait(follower, "k1", 0.2)[1] == engines.TIMEOUT
    started = time.monotonic()
    assert engines.wait(follower, "k2", LONG)[1] == engines.STALLED  # no second timeout
    assert time.monotonic() - started < 1.0
    engines.publish(leader, "k3", _decision(), None)  # the leader moved on
    assert engines.wait(follower, "k4", 0.2)[1] == engines.TIMEOUT  # so it waits again
    engines.publish(follower, "k5", _decision(), None)  # a follower's own: not the leader's
    assert engines.wait(follower, "k6", LONG)[1] == engines.STALLED


class BrokenStore(dist.Store):
    def check(self, keys):
        raise RuntimeError("connection reset by peer")


def test_a_store_error_only_ends_the_wait():
    _leader, follower = _pair()
    broken = Group("job", "job", 1, 2, BrokenStore(), "test")
    started = time.monotonic()
    assert engines.wait(broken, "k1", LONG)[1] == engines.STORE_ERROR
    assert time.monotonic() - started < 1.0
    assert engines.lookup(broken, "k1") == (None, None)  # a lookup never raises either
    assert follower.coordinated


def test_waits_are_bounded_below_the_process_groups_timeout(tmp_path):
    assert engines.wait_bound(5.0) == 5.0
    # no process group: c10d's default (gloo's 30 min on a machine without CUDA)
    assert engines.wait_bound(3600.0) == engines.WAIT_SHARE * 1800.0
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0,
                            world_size=1, timeout=datetime.timedelta(seconds=40))
    try:
        assert engines.pg_timeout_s() == 40.0
        assert engines.wait_bound(600.0) == 20.0
    finally:
        dist.destroy_process_group()


# --- groups: who leads, which store --------------------------------------------------------


def test_group_before_init_process_group_outside_torchrun_has_no_store():
    group = fleet_group._make("job", {"RANK": "1", "WORLD_SIZE": "4"})
    assert group.store is None and not group.coordinated and group.rank == 1
    assert "before init_process_group" in group.why_alone
    assert fleet_group._make("job", {"RANK": "0", "WORLD_SIZE": "1"}).why_alone == \
        "the only rank of its job"
    assert "no LOCAL_RANK" in fleet_group._make("node", {}).why_alone


def test_node_group_from_torchrun_and_slurm_variables():
    torchrun = fleet_group._placement("node", {"LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "8",
                                               "GROUP_RANK": "5"})
    assert torchrun == ("node 5", 3, 8)
    slurm = fleet_group._placement("node", {"SLURM_LOCALID": "0", "SLURM_NODEID": "2",
                                            "SLURM_NTASKS_PER_NODE": "8(x2)"})
    assert slurm == ("node 2", 0, 8)
    assert fleet_group._placement("job", {"SLURM_PROCID": "9", "SLURM_NTASKS": "16"}) == \
        ("job", 9, 16)


def test_group_under_torchrun_uses_the_agent_store_before_init(monkeypatch):
    """torchrun's agent runs a TCPStore and sets TORCHELASTIC_USE_AGENT_STORE: the rank
    reaches it with torch's env:// rendezvous, before any init_process_group; keys of
    another restart are not this attempt's."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    agent = dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False,
                          timeout=datetime.timedelta(seconds=30))
    env = {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "TORCHELASTIC_USE_AGENT_STORE": "True",
           "TORCHELASTIC_RUN_ID": "r1", "TORCHELASTIC_RESTART_COUNT": "2"}
    for name, value in env.items():  # torch's rendezvous reads the process environment
        monkeypatch.setenv(name, value)
    group = fleet_group._make("job", os.environ)
    assert group.coordinated and group.store_kind == fleet_group.AGENT_STORE
    engines.publish(group, "k1", _decision(), None)
    assert json.loads(agent.get("inductor_sm_override/fleet/r1.2/job/decision/k1"))[
        "choice"] == "x"


def test_group_after_init_process_group_uses_the_default_store(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        group = fleet_group._make("job", {"RANK": "1", "WORLD_SIZE": "2"})
        assert group.coordinated and group.store_kind == fleet_group.DEFAULT_STORE
        group.store.set("probe", "y")
        default = dist.distributed_c10d._get_default_store()
        assert default.get("inductor_sm_override/fleet/run.0/job/probe") == b"y"
    finally:
        dist.destroy_process_group()
    assert fleet_group._make("job", {"RANK": "1", "WORLD_SIZE": "2"}).store is None


# --- a rank with a decision: Inductor's real selector -------------------------------------


def _choices(a, b, layout, *, wrong: str = "") -> list:
    """An extern and three templates; "t_fast" is the fastest."""
    return [extern(a, b, layout),
            Template("t_slow", [a, b], layout, bm=16, ms=3e-4, wrong=wrong == "t_slow"),
            Template("t_fast", [a, b], layout, bm=32, ms=1e-4, wrong=wrong == "t_fast"),
            Template("t_mid", [a, b], layout, bm=64, ms=2e-4, wrong=wrong == "t_mid")]


def _fleet(kind: str) -> list[dict]:
    return [e for e in iso.fleet_events() if e["outcome"] == kind]


def test_a_second_process_runs_only_the_decided_choice_checked(tmp_path):
    with lowering() as (a, b, layout), iso.override(fleet="job"):
        first = _choices(a, b, layout)
        select("mm", first, a, b, layout)
        decisions.forget()  # another process: only the shared directory knows
        again = _choices(a, b, layout)
        node = select("mm", again, a, b, layout)
    tuned, decided = iso.decisions()
    assert tuned["winner"] == "t_fast" and tuned["origin"] == "tuned here"
    assert all(c.benchmarked == 1 for c in first[1:])
    assert node.get_name() == "out_t_fast"
    assert [c.benchmarked for c in again[1:]] == [0, 1, 0]  # only the decided one ran
    assert decided["winner"] == "t_fast" and decided["checks"]["t_fast"]["passed"] is True
    assert decided["origin"].startswith("decided by pid") and decided["key"] == tuned["key"]
    assert decided["reference_added"] == "mm"  # checked against the op's reference
    (event,) = _fleet("decided")
    assert event["source"] == engines.DIR and event["role"] == "none"
    assert list((tmp_path / "inductor" / "iso_decisions").rglob("*.json"))


def test_a_decision_wrong_here_or_not_offered_here_is_autotuned_here(tmp_path):
    with lowering() as (a, b, layout), iso.override(fleet="job"):
        select("mm", _choices(a, b, layout), a, b, layout)
        decisions.forget()
        wrong_here = _choices(a, b, layout, wrong="t_fast")
        node = select("mm", wrong_here, a, b, layout)
        assert node.get_name() == "out_t_mid"  # the search here, without t_fast
        (path,) = (tmp_path / "inductor" / "iso_decisions").rglob("*.json")
        assert json.loads(path.read_text())["name"] == "t_mid"  # this rank's own now
        path.write_text(json.dumps({**_decision('["t_none", "", []]'), "by": {"rank": 3}}))
        decisions.forget()
        unknown = _choices(a, b, layout)
        select("mm", unknown, a, b, layout)
    _tuned, failed, retried, searched = iso.decisions()
    assert "t_fast" in failed["rejected"] and failed["origin"].startswith("decided by")
    assert [c.benchmarked for c in wrong_here[1:]] == [1, 2, 1]  # checked, then the search
    assert retried["origin"] == "tuned here" and retried["winner"] == "t_mid"
    assert any("failed its check here" in n and "autotuned here" in n for n in retried["notes"])
    assert searched["winner"] == "t_fast" and searched["origin"] == "tuned here"
    assert any("decision of rank 3" in n and "not offered here" in n
               for n in searched["notes"])
    assert [c.benchmarked for c in unknown[1:]] == [1, 1, 1]  # one selection, every choice
    dropped = _fleet("dropped")
    assert len(dropped) == 2 and "failed its check" in dropped[0]["detail"]
    assert "not offered here" in dropped[1]["detail"]


def test_redis_carries_decisions_to_a_rank_with_another_cache_dir(redis_server, monkeypatch,
                                                                 tmp_path):
    for name, value in redis_server.env.items():
        monkeypatch.setenv(name, value)
    with lowering() as (a, b, layout), iso.override(fleet="node"):
        select("mm", _choices(a, b, layout), a, b, layout)
        decisions.forget()
        monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "elsewhere"))
        select("mm", _choices(a, b, layout), a, b, layout)
    (event,) = _fleet("decided")
    assert event["source"] == engines.REDIS and event["winner"] == "t_fast"
    assert redis_server.client().keys("inductor_sm_override:decision:*")


def test_a_follower_takes_its_leaders_decision_and_stops_waiting_for_a_stalled_one(
        monkeypatch):
    leader, follower = _pair()
    monkeypatch.setattr(decisions, "group_for", lambda scope: follower)
    with lowering() as (a, b, layout), iso.override(fleet="job", fleet_timeout_s=LONG):
        key = decisions.decision_key("mm", [a, b], layout, iso.Settings(fleet="job"))
        want = decisions.identity(_choices(a, b, layout)[3])  # t_mid: the leader's pick
        timer = threading.Timer(0.3, engines.publish, (leader, key, {
            **_decision(want), "name": "t_mid"}, None))
        timer.start()
        select("mm", _choices(a, b, layout), a, b, layout)
        timer.join()
    with lowering(size=24) as (a, b, layout), iso.override(fleet="job", fleet_timeout_s=0.3):
        select("mm", _choices(a, b, layout), a, b, layout)  # the leader never gets here
    with lowering(size=32) as (a, b, layout), iso.override(fleet="job", fleet_timeout_s=LONG):
        started = time.monotonic()
        select("mm", _choices(a, b, layout), a, b, layout)
        assert time.monotonic() - started < LONG / 2  # not a second timeout
    decided, timed_out, stalled = iso.fleet_events()
    assert (decided["outcome"], decided["source"], decided["role"]) == \
        ("decided", engines.STORE, "follower")
    assert decided["winner"] == "t_mid" and decided["tuned_by"] == 0
    assert 0.25 < decided["waited_s"] < LONG and decided["wait_end"] == engines.FOUND
    assert (timed_out["outcome"], timed_out["wait_end"]) == ("tuned", engines.TIMEOUT)
    assert (stalled["outcome"], stalled["wait_end"]) == ("tuned", engines.STALLED)
    notes = [d["notes"] for d in iso.decisions()]
    assert any("timeout after" in n for n in notes[1]) and any("stalled" in n for n in notes[2])


# --- on a GPU: decisions made on cuda:0, replayed in another process -----------------------

GPU_RANK = """
import json, sys, torch
import inductor_sm_override as iso
device = sys.argv[1]
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.ReLU(),
                            torch.nn.Linear(1024, 256)).to(device, torch.float16)
x = torch.randn(64, 512, device=device, dtype=torch.float16)
with torch.no_grad(), iso.override(fleet="job", max_choices=4):
    out = torch.compile(model, mode="max-autotune-no-cudagraphs")(x)
    ok = torch.allclose(out.float(), model(x).float(), rtol=2e-2, atol=2e-2)
print(json.dumps({"ok": bool(ok), "decisions": iso.decisions(), "fleet": iso.fleet_events()},
                 default=str))
"""


@pytest.mark.gpu
def test_gpu_decisions_made_on_cuda0_are_replayed_and_checked_in_another_process(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"),
           "TORCHINDUCTOR_FX_GRAPH_CACHE": "0", "TORCHINDUCTOR_AUTOGRAD_CACHE": "0"}
    env = {k: v for k, v in env.items() if not k.startswith(("RANK", "WORLD_SIZE"))}
    second = "cuda:1" if torch.cuda.device_count() > 1 else "cuda:0"
    runs = []
    for device in ("cuda:0", second):
        out = subprocess.run([sys.executable, "-c", GPU_RANK, device], env=env,
                             capture_output=True, text=True, timeout=1200)
        assert out.returncode == 0, out.stderr[-3000:]
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    made, replayed = runs
    assert made["ok"] and replayed["ok"]
    tuned = [d for d in made["decisions"] if d["key"]]
    assert tuned and all(d["origin"] == "tuned here" for d in tuned)
    decided = [d for d in replayed["decisions"] if d["key"]]
    assert {d["key"] for d in decided} == {d["key"] for d in tuned}
    for op in decided:
        assert op["origin"].startswith("decided by pid"), op
        winner = op["winner"]
        assert winner in op["externs"] or op["checks"][winner]["passed"] is True, op
        assert op["deferred"] is False and op["winner_unchecked"] is False
    assert {e["outcome"] for e in replayed["fleet"]} == {"decided"}
    assert {e["source"] for e in replayed["fleet"]} == {engines.DIR}


def test_report_lines_say_who_tuned_what_and_why():
    from inductor_sm_override.tools.report import _fleet_line, fleet_summary

    base = {"event": "fleet", "group": "job", "leader": "rank 0", "role": "follower",
            "rank": 1, "waited_s": 2.0}
    events = [{**base, "outcome": "decided", "source": engines.STORE, "tuned_by": 0},
              {**base, "outcome": "decided", "source": engines.DIR, "tuned_by": 0},
              {**base, "outcome": "tuned", "wait_end": engines.TIMEOUT, "waited_s": 5.0},
              {**base, "outcome": "dropped", "detail": "... failed its check here: x"},
              {**base, "role": "leader", "rank": 0, "outcome": "tuned", "waited_s": 0.0}]
    follower, leader = (_fleet_line(row) for row in fleet_summary(events))
    assert follower == (
        "fleet (job, leader rank 0): rank 1 follower: 4 ops: 2 decided elsewhere (by rank 0: "
        "2; from the job's store: 1; the shared directory: 1), 1 tuned here (the wait timed "
        "out: 1), 1 decision dropped and tuned here (failed its check here: 1); waited 11.0 s "
        "in all")
    assert leader == "fleet (job, leader rank 0): rank 0 leader: 1 op: 0 decided elsewhere, " \
        "1 tuned here"
