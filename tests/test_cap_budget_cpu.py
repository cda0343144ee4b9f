"""Cap and budget with real autotuning on the CPU (no GPU needed: Inductor's C++ GEMM
template competes with MKL for frozen weights)."""

from __future__ import annotations

import threading

import pytest
import torch
import torch._inductor.config as inductor_config
from cpu_compile import EXTERN_MARK, TEMPLATE_MARK, compile_under

import inductor_sm_override as iso
from inductor_sm_override.core import events

pytestmark = pytest.mark.slow


def test_uncapped_benchmarks_template_and_extern(cpu_model):
    model, x = cpu_model
    out, _code, events = compile_under(model, x)
    assert len(events) == 2  # two GEMMs
    for event in events:
        assert event["event"] == "autotune" and event["name"] == "packed_linear"
        assert any(n.startswith("cpp_") for n in event["kept"]) and "_mkl_linear" in event["kept"]
        assert all(v is not None and v > 0 for v in event["timings"].values())
        assert set(event["timings"]) == set(event["kept"])
        assert event["winner"] in event["timings"] and event["rejected"] == {}
        template = next(n for n in event["kept"] if n.startswith("cpp_"))
        assert event["checks"][template]["passed"] is True
    torch.testing.assert_close(out, model(x))


@pytest.mark.parametrize("settings, why", [({"max_choices": 0}, "capped"),
                                           ({"budget_s": 0}, "budget_dropped")])
def test_zero_cap_or_budget_runs_only_the_extern(cpu_model, settings, why):
    model, x = cpu_model
    out, code, events = compile_under(model, x, **settings)
    assert len(events) == 2
    for event in events:
        assert event["kept"] == ["_mkl_linear"] and event["winner"] == "_mkl_linear"
        assert [n for n in event[why] if n.startswith("cpp_")], event
        assert not any(k.startswith("cpp_") for k in event["timings"])  # never benchmarked
    assert TEMPLATE_MARK not in code and EXTERN_MARK in code
    torch.testing.assert_close(out, model(x))


def test_search_space_is_passed_through_for_the_compile_only():
    """The block's search space reaches its compile (in the compiling thread, for that
    compile: compile_scope.py); the block's body and other threads keep the user's config."""
    import contextlib


    before = inductor_config.max_autotune_gemm_search_space
    seen = {}

    @contextlib.contextmanager
    def hook(settings):
        seen["compiling"] = inductor_config.max_autotune_gemm_search_space
        yield

    def other_thread():
        seen["other"] = inductor_config.max_autotune_gemm_search_space

    events.GRAPH_SCOPES.append(hook)
    try:
        with iso.override(search_space="exhaustive"):
            seen["inside"] = inductor_config.max_autotune_gemm_search_space
            thread = threading.Thread(target=other_thread)
            thread.start()
            thread.join()
            torch.compile(lambda t: torch.sin(t) * 1.5, mode="default")(torch.ones(3))
    finally:
        events.GRAPH_SCOPES.remove(hook)
    assert seen == {"inside": before, "other": before, "compiling": "EXHAUSTIVE"}
    assert inductor_config.max_autotune_gemm_search_space == before
