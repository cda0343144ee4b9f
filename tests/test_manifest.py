"""Manifests without a compile (issue 21): sealing, corruption, what a manifest vouches
for, judging the manifest a graph entry carries (one write: no copy beside it), and the
require_manifest setting."""

from __future__ import annotations

import json

import pytest

import inductor_sm_override as iso
from inductor_sm_override.checks import manifest
from inductor_sm_override.core.settings import Settings, SettingsError, settings_key
from inductor_sm_override.hooks.cache import CARRIED, judge

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
    edited = json.loads(json.dumps(envelope))
    edited["manifest"]["producer"]["host"] = "elsewhere"
    broken = {
        "not a manifest envelope": {"some": "dict"},
        "manifest version 1,": {**envelope, "version": 1},
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


def test_judge_reads_the_manifest_the_entry_carries():
    settings = Settings()
    envelope = manifest.seal(_manifest(settings))
    graph = Graph()
    setattr(graph, CARRIED, envelope)
    verdict = judge(graph, KEY, True, settings)
    assert not verdict.unverified and verdict.manifest["ops"][0]["name"] == "mm"
    assert verdict.source == "local" and judge(graph, KEY, False, settings).source == "remote"
    assert judge(Graph(), KEY, True, settings).reasons == [
        "no manifest: the graph entry carries none"]
    edited = json.loads(json.dumps(envelope))
    edited["manifest"]["ops"][0]["winner"] = "elsewhere"  # changed after sealing
    setattr(graph, CARRIED, edited)
    assert judge(graph, KEY, True, settings).reasons == [
        "corrupted manifest in the graph entry: sha256 does not match the manifest body"]
    setattr(graph, CARRIED, envelope)
    assert judge(graph, KEY, True, Settings(max_choices=2)).reasons == [
        "compiled under other settings"]


def test_require_manifest_setting_and_env_var():
    assert Settings().require_manifest is False
    assert Settings.from_env({"INDUCTOR_SM_OVERRIDE_REQUIRE_MANIFEST": "yes"}).require_manifest
    with pytest.raises(SettingsError, match="INDUCTOR_SM_OVERRIDE_REQUIRE_MANIFEST='maybe'"):
        Settings.from_env({"INDUCTOR_SM_OVERRIDE_REQUIRE_MANIFEST": "maybe"})
    with pytest.raises(SettingsError, match="require_manifest=1"):
        iso.override(require_manifest=1)
    # it changes no compiled code: producers without it share the key with consumers with it
    assert settings_key(Settings(require_manifest=True)) == settings_key(Settings())
