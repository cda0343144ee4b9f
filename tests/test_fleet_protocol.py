"""Compile once per fleet, the protocol (issue 21): a leader and a follower talking through
a real torch store (``torch.distributed.HashStore``; TCPStore for torchrun's agent store),
one thread each, no compile. The follower's wait must end on the leader's outcome, on
the graph's manifest, on the leader moving to another graph, or on the timeout; never
hang, never raise into the compile. tests/test_fleet_torchrun.py runs it for real."""

from __future__ import annotations

import datetime
import os
import socket
import threading

import pytest
import torch.distributed as dist
from inductor_sm_override.fleet.decisions.group import Group
from inductor_sm_override.manifest_store import STORE

from inductor_sm_override.checks.manifest import seal
from inductor_sm_override.core.settings import Settings
from inductor_sm_override.fleet import decisions as fleet
from inductor_sm_override.fleet import group as fleet_group

KEY = "fabcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrs"
OTHER = "fzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"
LONG = 120.0  # a wait that reaches this has failed the test (its assertion says so)


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    fleet.clear_fleet_events()
    monkeypatch.setattr(fleet, "_counters", {})
    monkeypatch.setattr(fleet, "_followers", {})
    monkeypatch.setattr(fleet, "POLL_S", 0.02)
    yield
    fleet.clear_fleet_events()


@pytest.fixture
def pair(monkeypatch):
    """Leader and follower groups over one real store (as two ranks see it)."""
    store = dist.HashStore()
    groups = {"leader": Group("job", "job", 0, 2, dist.PrefixStore("t/", store), "test"),
              "follower": Group("job", "job", 1, 2, dist.PrefixStore("t/", store), "test")}
    role = threading.local()
    monkeypatch.setattr(fleet, "group_for", lambda scope: groups[role.name])

    def as_role(name: str) -> None:
        role.name = name

    return store, as_role


def _settings(timeout: float = LONG) -> Settings:
    return Settings(fleet="job", fleet_timeout_s=timeout)


def _graph(settings: Settings, key: str | None, *, written: bool = False,
           raise_: BaseException | None = None, hit: bool = False,
           hold: threading.Event | None = None) -> None:
    """What cache.py and compile_scope do for one graph: scope, lookup, (save), end."""
    with fleet.graph_scope(settings):
        if key is not None:
            fleet.before_lookup(key, True, None)
            fleet.after_lookup(hit)
        if hold is not None:
            hold.wait(LONG)
        if raise_ is not None:
            raise raise_
        if written and key is not None:
            fleet.on_written(key, {}, {"local": "written"})


class Rank(threading.Thread):
    """One rank: its own graph counter (the counters are per process, like ranks')."""

    def __init__(self, as_role, name: str, body) -> None:
        super().__init__(daemon=True)
        self.as_role, self.role, self.body = as_role, name, body
        self.error: BaseException | None = None

    def run(self) -> None:
        self.as_role(self.role)
        try:
            self.body()
        except BaseException as exc:  # handed to the test
            self.error = exc


def _events(role: str) -> list[dict]:
    return [e for e in fleet.fleet_events() if e["role"] == role]


def _counters_per_thread(monkeypatch):
    """Leader and follower threads count their graphs apart, as two processes would."""
    import itertools

    local = threading.local()

    def next_index(group):
        if not hasattr(local, "counter"):
            local.counter = itertools.count()
        return next(local.counter)

    monkeypatch.setattr(fleet, "_next_index", next_index)


def test_follower_waits_for_the_leaders_graph_and_loads_it(pair, monkeypatch):
    _counters_per_thread(monkeypatch)
    _store, as_role = pair
    leader_may_finish = threading.Event()
    leader = Rank(as_role, "leader", lambda: _graph(_settings(), KEY, written=True,
                                                     hold=leader_may_finish))
    leader.start()
    follower = Rank(as_role, "follower", lambda: _graph(_settings(), KEY, hit=True))
    follower.start()
    follower.join(0.5)
    assert follower.is_alive()  # waiting while the leader compiles the same graph
    leader_may_finish.set()
    leader.join(LONG), follower.join(LONG)
    assert leader.error is None and follower.error is None
    (led,) = _events("leader")
    (followed,) = _events("follower")
    assert (led["outcome"], led["graph"], led["key"]) == ("written", 0, KEY)
    assert followed["outcome"] == "hit" and followed["wait_end"] == fleet.LEADER_DONE
    assert "written" in followed["detail"] and 0.4 < followed["waited_s"] < LONG
    assert led["leader"] == "rank 0" and followed["rank"] is None


def test_a_leader_that_raises_ends_the_wait_and_keeps_its_exception(pair, monkeypatch):
    _counters_per_thread(monkeypatch)
    _store, as_role = pair
    go = threading.Event()
    failure = RuntimeError("injected leader failure")
    leader = Rank(as_role, "leader", lambda: _graph(_settings(), KEY, raise_=failure,
                                                     hold=go))
    follower = Rank(as_role, "follower", lambda: _graph(_settings(), KEY))
    leader.start(), follower.start()
    go.set()
    leader.join(LONG), follower.join(LONG)
    assert leader.error is failure  # the user's compile error, unchanged
    (led,) = _events("leader")
    (followed,) = _events("follower")
    assert led["outcome"] == "failed" and "raised RuntimeError" in led["detail"]
    assert followed["wait_end"] == fleet.LEADER_FAILED and followed["outcome"] == "compiled"
    assert followed["waited_s"] < LONG


def test_another_graph_at_the_leaders_slot_ends_the_wait_before_it_finishes(pair,
                                                                           monkeypatch):
    """A rank-dependent shape: the leader's graph 0 has another key. The follower stops
    waiting as soon as the leader has claimed it, without waiting for that compile."""
    _counters_per_thread(monkeypatch)
    _store, as_role = pair
    leader_may_finish = threading.Event()
    leader = Rank(as_role, "leader", lambda: _graph(_settings(), OTHER, written=True,
                                                     hold=leader_may_finish))
    leader.start()
    follower = Rank(as_role, "follower", lambda: _graph(_settings(), KEY))
    follower.start()
    follower.join(LONG)
    assert not follower.is_alive() and leader.is_alive()  # the leader is still compiling
    leader_may_finish.set()
    leader.join(LONG)
    (followed,) = _events("follower")
    assert followed["wait_end"] == fleet.OTHER_GRAPH and followed["outcome"] == "compiled"
    assert OTHER[:16] in followed["detail"]


def test_a_graph_without_a_key_fills_the_leaders_slot(pair, monkeypatch):
    _counters_per_thread(monkeypatch)
    _store, as_role = pair
    leader = Rank(as_role, "leader", lambda: _graph(_settings(), None))
    leader.start(), leader.join(LONG)
    follower = Rank(as_role, "follower", lambda: _graph(_settings(), KEY))
    follower.start(), follower.join(LONG)
    (followed,) = _events("follower")
    assert followed["wait_end"] == fleet.OTHER_GRAPH
    assert "a graph with no cache key" in followed["detail"]
    assert _events("leader")[0]["outcome"] == "not written"


def test_timeout_then_no_second_wait_until_the_leader_moves(pair, monkeypatch):
    _counters_per_thread(monkeypatch)
    _store, as_role = pair
    stuck = threading.Event()
    leader = Rank(as_role, "leader", lambda: _graph(_settings(), KEY, hold=stuck))
    leader.start()

    def two_graphs() -> None:
        _graph(_settings(timeout=0.3), KEY)  # the leader is stuck on it: times out
        _graph(_settings(timeout=LONG), OTHER)  # the leader made no progress: no wait

    follower = Rank(as_role, "follower", two_graphs)
    follower.start(), follower.join(LONG)
    first, second = _events("follower")
    assert first["wait_end"] == fleet.TIMEOUT and "timed out after 0.3 s" in first["detail"]
    assert first["waited_s"] >= 0.3
    assert second["wait_end"] == fleet.STALLED and second["waited_s"] < 1.0
    stuck.set()
    leader.join(LONG)
    # the leader finished that graph: a graph it claimed or finished is waited for again
    third = Rank(as_role, "follower", lambda: _graph(_settings(), KEY, hit=True))
    third.start(), third.join(LONG)
    assert _events("follower")[-1]["wait_end"] == fleet.LEADER_DONE


def test_a_manifest_already_in_the_cache_ends_the_wait(pair, monkeypatch, tmp_path):
    """Written by an earlier job (or a leader this rank never heard of): no waiting."""
    _counters_per_thread(monkeypatch)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    body = {"graph_key": KEY, "settings_key": "s", "producer": {}, "ops": []}
    assert STORE.write(KEY, seal(body), local=True, remote_cache=None)["local"] == "written"
    _store, as_role = pair
    follower = Rank(as_role, "follower", lambda: _graph(_settings(), KEY, hit=True))
    follower.start(), follower.join(LONG)
    (followed,) = _events("follower")
    assert followed["wait_end"] == fleet.MANIFEST and followed["outcome"] == "hit"


def test_a_store_that_fails_ends_the_wait_and_the_rank_compiles(monkeypatch):
    class Broken:
        """A store whose server went away: every call raises, as TCPStore's do."""

        def __getattr__(self, name):
            def fail(*args, **kwargs):
                raise RuntimeError("Connection reset by peer")

            return fail

    group = Group("job", "job", 1, 2, Broken(), "test")
    monkeypatch.setattr(fleet, "group_for", lambda scope: group)
    _graph(_settings(), KEY)
    (event,) = fleet.fleet_events()
    assert event["wait_end"] == fleet.STORE_ERROR and "Connection reset" in event["detail"]
    leader = Group("job", "job", 0, 2, Broken(), "test")
    monkeypatch.setattr(fleet, "group_for", lambda scope: leader)
    with pytest.raises(KeyError):  # the compile's own error, not the store's
        _graph(_settings(), KEY, raise_=KeyError("compile"))
    assert fleet.fleet_events()[-1]["outcome"] == "failed"


def test_no_fleet_setting_no_event(monkeypatch):
    monkeypatch.setattr(fleet, "group_for", lambda scope: pytest.fail("no group needed"))
    with fleet.graph_scope(Settings()):
        fleet.before_lookup(KEY, True, None)
    assert fleet.fleet_events() == []


# --- groups: who leads, which store --------------------------------------------------------


def test_group_before_init_process_group_outside_torchrun_has_no_store():
    group = fleet_group._make("job", {"RANK": "1", "WORLD_SIZE": "4"})
    assert group.store is None and not group.coordinated and group.rank == 1
    assert "before init_process_group" in group.why_alone


def test_group_alone_and_rank_unknown():
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_group_under_torchrun_uses_the_agent_store_before_init(monkeypatch):
    """torchrun's agent runs a TCPStore and sets TORCHELASTIC_USE_AGENT_STORE: the rank
    reaches it with torch's env:// rendezvous, before any init_process_group."""
    port = _free_port()
    agent = dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False,
                          timeout=datetime.timedelta(seconds=30))
    env = {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "TORCHELASTIC_USE_AGENT_STORE": "True",
           "TORCHELASTIC_RUN_ID": "r1", "TORCHELASTIC_RESTART_COUNT": "2"}
    for name, value in env.items():  # torch's rendezvous reads the process environment
        monkeypatch.setenv(name, value)
    group = fleet_group._make("job", os.environ)
    assert group.coordinated and group.store_kind == fleet_group.AGENT_STORE
    group.store.set("probe", "x")
    assert agent.get("inductor_sm_override/fleet/r1.2/job/probe") == b"x"


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


# --- settings, report ----------------------------------------------------------------------


def test_fleet_settings_change_no_compiled_code():
    from inductor_sm_override.checks.manifest import compiled_settings
    from inductor_sm_override.core.settings import settings_key

    fleet_on = Settings(fleet="node", fleet_timeout_s=5)
    assert settings_key(fleet_on) == settings_key(Settings())  # the same FX-graph-cache key
    assert compiled_settings(fleet_on) == compiled_settings(Settings())


def test_report_shows_what_each_rank_did():
    from inductor_sm_override.tools.report import format_table, summarize

    base = {"event": "fleet", "scope": "job", "group": "job", "leader": "rank 0"}
    events = [
        {**base, "rank": 0, "role": "leader", "outcome": "written", "waited_s": 0.0},
        {**base, "rank": 0, "role": "leader", "outcome": "failed", "waited_s": 0.0},
        {**base, "rank": 1, "role": "follower", "outcome": "hit", "wait_end": "leader_done",
         "waited_s": 12.25},
        {**base, "rank": 1, "role": "follower", "outcome": "compiled",
         "wait_end": "leader_failed", "waited_s": 0.5},
        {**base, "rank": 1, "role": "follower", "outcome": "compiled", "wait_end": "timeout",
         "waited_s": 600.0},
        {**base, "rank": 2, "role": "none", "outcome": "compiled",
         "detail": "no store: not under torchrun, and this compile ran before "
                   "init_process_group"},
    ]
    table = format_table(summarize(events)).splitlines()
    assert "fleet (job, leader rank 0): rank 0 led 2 graphs: 1 written, 1 failed" in table
    assert ("fleet (job, leader rank 0): rank 1 followed 3 graphs: 1 loaded, waited 612.8 s "
            "in all; 2 compiled here (1 the leader's compile failed, 1 timed out)") in table
    assert ("fleet (job): rank 2 compiled 1 graph without a leader: no store: not under "
            "torchrun, and this compile ran before init_process_group") in table


def test_compile_before_init_process_group_outside_torchrun_never_waits(monkeypatch,
                                                                         cpu_model):
    """A real compile with fleet="job" on rank 1 of 2 where no store exists yet: it
    compiles here at once, and its event says why."""
    import torch

    import inductor_sm_override as iso

    for name in ("TORCHELASTIC_USE_AGENT_STORE", "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    model, x = cpu_model
    torch._dynamo.reset()
    with torch.no_grad(), iso.override(fleet="job", fleet_timeout_s=LONG):
        out = torch.compile(model, mode="max-autotune-no-cudagraphs")(x)
    torch.testing.assert_close(out, model(x))
    (event,) = fleet.fleet_events()
    assert (event["role"], event["rank"]) == ("none", 1)
    assert event["outcome"] in ("compiled", "hit")  # the session's cache may hold it
    assert event["waited_s"] == 0.0 and "before init_process_group" in event["detail"]


def test_a_fleet_switches_distributed_autotuning_off():
    """Distributed autotuning all-gathers inside each compile: with one leader compiling
    while the others wait for its graph, that collective would never complete."""
    import torch._inductor.config as config

    from inductor_sm_override.hooks.selector import config_changes

    # config.patch, not monkeypatch: pytest's undo deletes what a module's __dict__ lacks,
    # and deleting a config key hides it from every later test in the process
    with config.patch(distributed_max_autotune_gemm=True):
        assert config_changes(Settings(fleet="job"), config)["distributed_max_autotune_gemm"] \
            is False
        assert "distributed_max_autotune_gemm" not in config_changes(Settings(), config)
