"""Caches stay honest across settings: FX graph cache across processes, the lazy trap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from selector_harness import compiling

import inductor_sm_override as iso

PROBE = Path(__file__).with_name("cache_probe.py")
WORKER_PROBE = Path(__file__).with_name("worker_probe.py")


def _probe(cache_dir: Path, spec) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache_dir)}
    out = subprocess.run([sys.executable, str(PROBE), json.dumps(spec)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_fx_graph_cache_never_crosses_settings(tmp_path):
    """Two processes on one cache dir, each compiling in turn (dynamo reset between)."""
    first = [("plain", "miss"),
             ({}, "miss")]  # plain -> override: the plain graph is not served inside the block
    second = [({}, "hit"),  # the same settings in a new process still hit
              ({"max_choices": 1}, "miss"),  # different settings
              ({"verify": False}, "miss"),  # unverified vs verified
              ({"simulate_sms": 46}, "miss"),
              ({"report": str(tmp_path / "r.jsonl")}, "hit"),  # the report changes no code
              ("plain", "hit")]  # plain is still plain
    for steps in (first, second):
        results = _probe(tmp_path / "cache", [spec for spec, _ in steps])
        assert len(results) == len(steps)
        for (spec, expected), counts in zip(steps, results, strict=True):
            assert counts["bypass"] == 0, counts
            assert counts[expected] == 1 and counts["hit"] + counts["miss"] == 1, \
                (spec, expected, counts)


@pytest.mark.slow
def test_graph_compiled_under_the_override_is_not_served_plain(tmp_path):
    override, plain = _probe(tmp_path / "cache", [{}, "plain"])
    assert override["miss"] == 1 and plain["miss"] == 1 and plain["hit"] == 0


def test_settings_key_ignores_only_what_changes_no_code():
    from inductor_sm_override.core.settings import settings_key

    base = iso.Settings()
    assert settings_key(base) == settings_key(iso.Settings(report="x.jsonl", quiet=True))
    for change in ({"min_sms": 40}, {"max_choices": 8}, {"verify": False},
                   {"simulate_sms": 46}, {"search_space": "EXHAUSTIVE"}, {"rtol": 0.1}):
        assert settings_key(base) != settings_key(iso.Settings(**change)), change
    assert settings_key(None) != settings_key(base)


def test_user_post_grad_pass_still_runs_and_keeps_its_uuid():
    import torch._inductor.config as config
    from torch._inductor.custom_graph_pass import CustomGraphPass

    ran = []

    class Mine(CustomGraphPass):
        def __call__(self, graph):
            ran.append(graph)

        def uuid(self):
            return "mine-v1"

    with config.patch(post_grad_custom_post_pass=Mine()):
        with iso.override():
            assert isinstance(config.post_grad_custom_post_pass, Mine)  # the block: unchanged
            with compiling():  # what a compile in the block runs under
                salted = config.post_grad_custom_post_pass
                assert salted is not None and salted.uuid()[0] == ("mine-v1",)
                salted("graph")
        assert ran == ["graph"]
        assert isinstance(config.post_grad_custom_post_pass, Mine)
    assert config.post_grad_custom_post_pass is None


@pytest.mark.slow
def test_lazy_compile_trap_is_reported_once(cpu_model):
    model, x = cpu_model
    torch._dynamo.reset()
    compiled = torch.compile(model, mode="max-autotune-no-cudagraphs")
    with torch.no_grad():
        compiled(x)  # compiled before the block: keeps its kernels inside it
        with warnings.catch_warnings(record=True) as caught, iso.override():
            warnings.simplefilter("always")
            compiled(x)
            compiled(x)
    trap = [w for w in caught if "compiled outside any override block" in str(w.message)]
    assert len(trap) == 1 and "torch._dynamo.reset()" in str(trap[0].message)


@pytest.mark.slow
def test_compiled_inside_and_iso_compile_do_not_warn(cpu_model):
    model, x = cpu_model
    torch._dynamo.reset()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with iso.override():
            compiled = torch.compile(model, mode="max-autotune-no-cudagraphs")
            compiled(x)
            compiled(x)
        torch._dynamo.reset()
        checked = iso.compile(model, (x,))
        checked(x)
        with iso.override(max_choices=1):  # other settings: bound ones are kept on purpose
            checked(x)
    assert checked.used == "override"


def test_nested_blocks_salt_like_one_block_with_the_same_settings():
    """The FX-graph-cache key depends on the effective settings, not on how blocks nest; the
    user's own post-grad pass still runs and stays part of the key."""
    import torch._inductor.config as config
    from torch._inductor.custom_graph_pass import CustomGraphPass

    class UserPass(CustomGraphPass):
        def __call__(self, graph):
            return None

        def uuid(self):
            return "user-pass-1"

    def salt():
        with compiling():
            current = config.post_grad_custom_post_pass
            return current.uuid(), tuple(type(p).__name__ for p in current.inner)

    with config.patch(post_grad_custom_post_pass=UserPass()):
        with iso.override(max_choices=2, min_sms=40):
            single = salt()
        with iso.override(min_sms=40), iso.override(max_choices=2):
            nested = salt()
        with iso.override(min_sms=40), iso.override(max_choices=3):
            other = salt()
    assert nested == single and single[1] == ("UserPass",)
    assert "user-pass-1" in str(single[0])
    assert other[0] != single[0]


def _worker_probe(cache_dir: Path, where: str, override: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDUCTOR_SM_OVERRIDE")}
    env["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir)
    if override:
        env["INDUCTOR_SM_OVERRIDE"] = "1"  # through the start-up hook, as a launcher sets it
    out = subprocess.run([sys.executable, str(WORKER_PROBE), where], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_env_layer_salts_graphs_compiled_in_a_worker_thread(tmp_path):
    """Issue 20, defect 2: a frozen MLP compiled in a threading.Thread under
    INDUCTOR_SM_OVERRIDE=1 (Inductor imported by the main thread) was stored under the plain
    key before the fix: a process that never opted in was served it (fxgraph_cache_hit 1)."""
    cache = tmp_path / "cache"
    first = _worker_probe(cache, "thread", override=True)
    assert first["base"] and first["autotuned"] >= 1 and first["miss"] == 1, first
    plain = _worker_probe(cache, "main", override=False)
    assert plain["hit"] == 0 and plain["miss"] == 1, plain  # never the override's graph
    again = _worker_probe(cache, "thread", override=True)
    assert again["hit"] == 1 and again["autotuned"] == 0, again  # the same settings still hit
    assert again["cache_hits"] >= 1


def test_cache_hit_needs_a_key_salted_with_the_settings_in_force():
    """A worker thread under the env layer used to load a plain graph (unsalted key) and
    report it as a cache_hit of the override. Only a salted key's load is one now."""
    from inductor_sm_override.hooks import cache

    graph = object()

    def loader(key, *args, **kwargs):
        return graph, {"time_saved_ns": 10**9}

    iso.clear_cache_hits()
    with iso.override(max_choices=2):
        assert cache._on_load(loader, None, ("plain-key",), {})[0] is graph
        assert iso.cache_hits() == []  # the key in force is not salted with the settings
        with compiling():
            cache._on_load(loader, None, ("salted-key",), {"is_backward": True})
    (hit,) = iso.cache_hits()
    assert hit["key"] == "salted-key" and hit["backward"] is True
    assert hit["settings"]["max_choices"] == 2
    iso.clear_cache_hits()
