"""Provenance across processes with a real Redis (issues 21, 29): every graph written under
a block carries its manifest inside the graph entry (one write: graph and manifest cannot
disagree), in the local cache, in Redis and in portable bundles; a hit says where it came
from and who made it; a hit without a valid manifest is unverified, and
``require_manifest`` turns it into a miss.

Each probe is a new process (tests/fleet_probe.py) with its own Inductor cache dir, so a
hit there can only come from Redis (or from the bundle it loaded)."""

from __future__ import annotations

import base64
import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from inductor_sm_override.checks import manifest
from inductor_sm_override.hooks.cache import CARRIED

PROBE = Path(__file__).with_name("fleet_probe.py")
CLI = [sys.executable, "-m", "inductor_sm_override"]
pytestmark = pytest.mark.slow


def _probe(cache_dir: Path, spec: dict, redis=None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHINDUCTOR_REDIS")}
    env["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir)
    if redis is not None:
        env.update(redis.env)
    out = subprocess.run([sys.executable, str(PROBE), json.dumps(spec)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ok"], result  # compiled output (and gradients) match eager
    assert result["bypass"] == 0, result
    return result


def _remote_cache(redis, monkeypatch):
    """Inductor's own RemoteFxGraphCache on the test server (to read and damage entries)."""
    for name, value in redis.env.items():
        monkeypatch.setenv(name, value)
    from torch._inductor.remote_cache import RemoteFxGraphCache

    return RemoteFxGraphCache("fx-graph-v1")


def _only(items: list) -> dict:
    assert len(items) == 1, items
    return items[0]


def test_remote_hit_carries_its_manifest_other_settings_and_plain_miss(redis_server, tmp_path):
    made = _probe(tmp_path / "a", {"settings": {}}, redis_server)
    assert made["miss"] == 1 and len(made["written"]) == 1 and not made["hits"]
    key = made["written"][0]
    report = tmp_path / "b.jsonl"
    # another process, its own empty local cache: the hit comes from Redis; the report
    # path and require_manifest change no compiled code, so the key is the same
    got = _probe(tmp_path / "b", {"settings": {"report": str(report),
                                               "require_manifest": True}}, redis_server)
    assert got["hit"] == 1 and got["miss"] == 0 and not got["decisions"]
    hit = _only(got["hits"])
    assert hit["key"] == key and hit["source"] == "remote" and hit["unverified"] is False
    assert hit["reasons"] == []
    producer = hit["producer"]
    assert producer["pid"] == made["pid"] != got["pid"]
    assert producer["host"] == socket.gethostname() and producer["device"]["name"] == "cpu"
    assert producer["versions"]["torch"] and producer["versions"]["inductor_sm_override"]
    assert [op["name"] for op in hit["ops"]] == [d["name"] for d in made["decisions"]]
    assert hit["ops"][0]["winner"] == made["decisions"][0]["winner"]
    assert hit["ops"][0]["origin"] == "tuned here"
    logged = [json.loads(line) for line in report.read_text().splitlines()]
    assert _only([e for e in logged if e["event"] == "cache_hit"])["source"] == "remote"
    table = subprocess.run([*CLI, "report", str(report)], capture_output=True, text=True,
                           timeout=120).stdout
    assert "1 graph loaded from cache" in table and "0 local, 1 remote" in table
    assert "unverified: 0" in table
    # other settings, and no override, never get that graph
    other = _probe(tmp_path / "c", {"settings": {"max_choices": 1}}, redis_server)
    assert other["hit"] == 0 and other["miss"] == 1 and not other["hits"]
    plain = _probe(tmp_path / "d", {"settings": None}, redis_server)
    assert plain["hit"] == 0 and plain["miss"] == 1 and not plain["hits"]


def test_remote_hit_of_an_autotuned_graph_lists_the_checks_its_producer_made(
        redis_server, tmp_path):
    """An inference graph whose addmm Inductor autotunes on the CPU (C++ template vs ATen):
    the rank that hits autotunes nothing and sees what was checked where it was made."""
    made = _probe(tmp_path / "a", {"settings": {}, "autotune": True}, redis_server)
    tuned = [d for d in made["decisions"] if d["name"] == "addmm"]
    assert tuned and made["miss"] == 1
    got = _probe(tmp_path / "b", {"settings": {}, "autotune": True}, redis_server)
    assert got["hit"] == 1 and not got["decisions"]
    hit = _only(got["hits"])
    assert hit["source"] == "remote" and hit["unverified"] is False
    ops = [op for op in hit["ops"] if op["name"] == "addmm"]
    assert [op["winner"] for op in ops] == [d["winner"] for d in tuned]
    for op in ops:
        templates = [c for c in op["kept"] if c.startswith("cpp_")]
        assert templates and all(c in op["checks_passed"] for c in templates), op
        assert op["origin"] == "tuned here" and op["winner_unchecked"] is False


def test_training_hits_forward_and_backward_with_their_manifests(redis_server, tmp_path):
    made = _probe(tmp_path / "a", {"settings": {}, "train": True}, redis_server)
    assert made["miss"] == 2 and len(made["written"]) == 2
    got = _probe(tmp_path / "b", {"settings": {}, "train": True}, redis_server)
    assert got["hit"] == 2 and not got["decisions"]
    assert {h["backward"] for h in got["hits"]} == {False, True}
    assert all(h["source"] == "remote" and h["unverified"] is False for h in got["hits"])
    assert {h["key"] for h in got["hits"]} == set(made["written"])


def _edit_carried(remote, key: str, edit) -> None:
    """Rewrite the manifest the Redis entry of ``key`` carries: ``edit(graph)``."""
    entry = remote.get(key)
    graph = pickle.loads(base64.b64decode(entry["data"]))
    edit(graph)
    entry["data"] = base64.b64encode(pickle.dumps(graph)).decode("ascii")
    remote.put(key, entry)


def test_manifestless_hit_is_unverified_and_require_manifest_makes_it_a_miss(
        redis_server, tmp_path, monkeypatch):
    key = _only(_probe(tmp_path / "a", {"settings": {}}, redis_server)["written"])
    # what a producer without manifests would have written
    _edit_carried(_remote_cache(redis_server, monkeypatch), key,
                  lambda graph: delattr(graph, CARRIED))
    lax = _probe(tmp_path / "b", {"settings": {}}, redis_server)
    hit = _only(lax["hits"])
    assert lax["hit"] == 1 and hit["unverified"] is True and hit["producer"] is None
    assert hit["reasons"] == ["no manifest: the graph entry carries none"]
    strict = _probe(tmp_path / "c", {"settings": {"require_manifest": True}}, redis_server)
    # a miss wherever the graph is looked up (AOT autograd's cache, then the inner compile)
    assert strict["hit"] == 0 and strict["miss"] >= 1 and not strict["hits"]
    assert strict["refused"] and {(r["key"], r["source"]) for r in strict["refused"]} == \
        {(key, "remote")}
    assert strict["decisions"] and strict["written"] == [key]  # compiled here, rewritten
    again = _probe(tmp_path / "d", {"settings": {"require_manifest": True}}, redis_server)
    hit = _only(again["hits"])
    assert hit["unverified"] is False and hit["producer"]["pid"] == strict["pid"]


def test_corrupted_or_forged_carried_manifest_is_refused(redis_server, tmp_path,
                                                       monkeypatch):
    key = _only(_probe(tmp_path / "a", {"settings": {}}, redis_server)["written"])
    remote = _remote_cache(redis_server, monkeypatch)

    def rot(graph):  # bit rot: the body no longer matches its sha256
        getattr(graph, CARRIED)["manifest"]["producer"]["host"] = "elsewhere"

    _edit_carried(remote, key, rot)
    lax = _probe(tmp_path / "b", {"settings": {}}, redis_server)
    hit = _only(lax["hits"])
    assert hit["unverified"] is True and hit["reasons"] == [
        "corrupted manifest in the graph entry: sha256 does not match the manifest body"]
    strict = _probe(tmp_path / "c", {"settings": {"require_manifest": True}}, redis_server)
    assert strict["hit"] == 0 and not strict["hits"] and strict["refused"]
    assert strict["written"] == [key]  # compiled here and written again, intact
    # well sealed, but made under other settings (another producer's claims)

    def forge(graph):
        body = manifest.unseal(getattr(graph, CARRIED))
        setattr(graph, CARRIED, manifest.seal({**body, "settings_key": "other"}))

    _edit_carried(remote, key, forge)
    strict = _probe(tmp_path / "e", {"settings": {"require_manifest": True}}, redis_server)
    assert strict["hit"] == 0 and strict["refused"]
    assert all(r["reasons"] == ["compiled under other settings"] for r in strict["refused"])


def test_portable_bundle_hits_elsewhere_and_reports_its_producer(tmp_path):
    bundle = tmp_path / "bundle.bin"
    made = _probe(tmp_path / "a", {"settings": {}, "save_bundle": str(bundle)})
    assert bundle.stat().st_size > 0
    # another process with another (empty) cache dir and no Redis loads the bundle
    got = _probe(tmp_path / "b", {"settings": {}, "load_bundle": str(bundle)})
    hit = _only(got["hits"])
    assert got["hit"] == 1 and not got["decisions"]
    assert hit["source"] == "local" and hit["unverified"] is False
    assert hit["producer"]["pid"] == made["pid"] and hit["ops"]
    other = _probe(tmp_path / "c", {"settings": {"max_choices": 1},
                                    "load_bundle": str(bundle)})
    assert other["hit"] == 0 and not other["hits"]
