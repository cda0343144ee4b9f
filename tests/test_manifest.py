"""Manifests without a compile (issue 21): sealing, corruption, what a manifest vouches
for, the store's local and remote (real Redis) backends, and the require_manifest setting."""

from __future__ import annotations

import json

import pytest

import inductor_sm_override as iso
from inductor_sm_override.checks import manifest
from inductor_sm_override.core.settings import settings_key
from inductor_sm_override.manifest_store import STORE, ManifestStore
from inductor_sm_override.hooks.cache import CARRIED, judge
from inductor_sm_override.core.settings import Settings, SettingsError

KEY = "fabcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrstu"


def _op(**changes):
    op = {"name": "mm", "device": "cpu", "winner": "mm", "winner_unchecked": False,
          "origin": "tuned here", "checks_passed": [], "rejected": {}}
    return {**op, **changes}


def _manifest(settings=None, ops=None):
    return manifest.build(KEY, settings or Settings(), [_op()] if ops is None else ops)


def test_seal_round_trip_and_every_corruption_is_named():
    envelope = manifest.seal(_manifest())
    assert manifest.unseal(envelope) == _manifest() | {"producer": envelope["manifest"]
                                                        ["producer"]}
    assert manifest.unseal(json.dumps(envelope)) == envelope["manifest"]
    edited = json.loads(json.dumps(envelope))
    edited["manifest"]["producer"]["host"] = "elsewhere"
    broken = {
        "not JSON": b"\x00garbage",
        "not a manifest envelope": {"some": "dict"},
        "manifest version 99": {**envelope, "version": 99},
        "sha256 does not match": edited,
        "no 'ops'": manifest.seal({k: v for k, v in _manifest().items() if k != "ops"}),
    }
    for expected, value in broken.items():
        with pytest.raises(manifest.CorruptedManifestError, match=expected):
            manifest.unseal(value)


def test_assess_names_what_does_not_match_here():
    settings = Settings(max_choices=4)
    good = _manifest(settings)
    assert manifest.assess(good, KEY, settings) == []
    other_key = manifest.assess(good, KEY[::-1], settings)
    assert other_key == ["manifest of another graph key"]
    assert manifest.assess(good, KEY, Settings(max_choices=8)) == [
        "compiled under other settings"]
    # settings that change no compiled code are not compared
    assert manifest.assess(good, KEY, Settings(max_choices=4, report="r.jsonl",
                                               require_manifest=True)) == []
    gpu = json.loads(json.dumps(good))
    gpu["producer"]["device"] = {"type": "cuda", "name": "NVIDIA H100", "sms": 132}
    assert "compiled for another device" in manifest.assess(gpu, KEY, settings)[0]
    unchecked = _manifest(settings, [_op(winner="t", winner_unchecked=True)])
    assert manifest.assess(unchecked, KEY, settings) == [
        "the producer took 1 op(s) unchecked: mm"]
    no_ops = _manifest(settings)
    no_ops["ops"] = None
    assert manifest.assess(no_ops, KEY, settings) == [
        "the producer did not record the graph's ops"]


def test_other_sm_count_is_named(fake_gpu):
    settings = Settings()
    made = _manifest(settings, [_op(device="cuda:0")])
    assert made["producer"]["device"] == {"type": "cuda", "name": fake_gpu.name, "sms": 46,
                                          "simulated_sms": None, "limited_sms": None}
    made["producer"]["device"]["sms"] = 40
    assert manifest.assess(made, KEY, settings) == [
        "compiled on another SM count (40, here 46)"]


class Graph:
    """Stands for a CompiledFxGraph: what provenance reads of it is one attribute."""


def test_local_store_and_judge(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    settings = Settings()
    envelope = manifest.seal(_manifest(settings))
    assert STORE.write(KEY, envelope, local=True, remote_cache=None) == {"local": "written"}
    path = ManifestStore.local_path(KEY, envelope["sha256"])
    assert path.startswith(str(tmp_path / "fxgraph" / KEY[1:3]))
    graph = Graph()
    setattr(graph, CARRIED, envelope)
    verdict = judge(graph, KEY, True, None, settings)
    assert not verdict.unverified and verdict.manifest["ops"][0]["name"] == "mm"
    assert STORE.wait_for(KEY, 0).manifest == verdict.manifest
    with open(path, "w") as handle:
        handle.write("{")
    assert judge(graph, KEY, True, None, settings).reasons[0].startswith(
        "corrupted manifest in the local cache")
    assert judge(Graph(), KEY, True, None, settings).reasons == [
        "no manifest: the graph entry carries none"]
    (tmp_path / "fxgraph").rename(tmp_path / "gone")
    verdict = judge(graph, KEY, True, None, settings)
    assert not verdict.unverified and "no manifest copy in the local cache" in verdict.notes[0]


def test_remote_store_through_inductors_remote_cache(redis_server, monkeypatch):
    for name, value in redis_server.env.items():
        monkeypatch.setenv(name, value)
    from torch._inductor.remote_cache import RemoteFxGraphCache

    remote = RemoteFxGraphCache("fx-graph-v1")
    settings = Settings()
    envelope = manifest.seal(_manifest(settings))
    assert STORE.write(KEY, envelope, local=False, remote_cache=remote) == {
        "remote": "written"}
    assert [k.decode() for k in redis_server.client().keys("*")] == [
        f"pt2:fx-graph-v1::{KEY}.iso-manifest:c1"]  # Inductor's own key format
    assert STORE.read_remote(KEY, remote).manifest == envelope["manifest"]
    assert STORE.wait_for(KEY, 0, remote_cache=remote).ok
    graph = Graph()
    setattr(graph, CARRIED, envelope)
    assert not judge(graph, KEY, False, remote, settings).unverified
    other = manifest.seal(_manifest(Settings(max_choices=2)))
    remote.put(ManifestStore.remote_key(KEY), other)
    assert judge(graph, KEY, False, remote, settings).reasons == [
        "the manifest in the remote cache is not the one the graph entry carries"]
    redis_server.client().set(f"pt2:fx-graph-v1::{KEY}.iso-manifest:c1", b"\xff")
    assert STORE.read_remote(KEY, remote).status == "corrupted"
    assert STORE.read_remote("f" + KEY[1:-1] + "x", remote).status == "missing"


def test_require_manifest_setting_and_env_var():
    assert Settings().require_manifest is False
    assert Settings.from_env({"INDUCTOR_SM_OVERRIDE_REQUIRE_MANIFEST": "yes"}).require_manifest
    with pytest.raises(SettingsError, match="INDUCTOR_SM_OVERRIDE_REQUIRE_MANIFEST='maybe'"):
        Settings.from_env({"INDUCTOR_SM_OVERRIDE_REQUIRE_MANIFEST": "maybe"})
    with pytest.raises(SettingsError, match="require_manifest=1"):
        iso.override(require_manifest=1)
    # it changes no compiled code: producers without it share the key with consumers with it
    assert settings_key(Settings(require_manifest=True)) == settings_key(Settings())
