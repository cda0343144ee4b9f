"""iso.limit_sms: rounding, clear errors, context handling (a fake green context on CPU);
the real timing check runs on a GPU (marked gpu)."""

from __future__ import annotations

import sys
import types
import warnings

import pytest
import torch

import inductor_sm_override as iso
from inductor_sm_override import limit


@pytest.mark.parametrize("requested, major, total, expected", [
    (46, 9, 132, 48), (40, 9, 132, 40), (3, 9, 132, 8), (500, 9, 132, 128),
    (46, 8, 84, 46), (45, 8, 84, 46), (1, 8, 84, 4), (28, 7, 40, 28), (5, 6, 10, 5),
])
def test_round_sms_to_architecture_granularity(requested, major, total, expected):
    assert limit.round_sms(requested, major, total) == expected


def test_clear_error_on_torch_built_without_green_context_support(monkeypatch, fake_gpu):
    fake = types.SimpleNamespace(SUPPORTED=False)
    monkeypatch.setitem(sys.modules, "torch.cuda.green_contexts", fake)
    monkeypatch.setattr(torch.cuda, "green_contexts", fake, raising=False)
    with pytest.raises(RuntimeError, match="without green context support"), iso.limit_sms(8):
        pass


def test_bad_n_is_rejected():
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="n must be"):
            iso.limit_sms(bad)


def test_clear_error_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"), iso.limit_sms(46):
        pass


def test_clear_error_on_torch_without_green_contexts(monkeypatch, fake_gpu):
    monkeypatch.setitem(sys.modules, "torch.cuda.green_contexts", None)  # import fails
    monkeypatch.delattr(torch.cuda, "green_contexts", raising=False)
    with pytest.raises(RuntimeError, match=r"torch >= 2.10"), iso.limit_sms(46):
        pass


class _FakeGreen:
    log: list[str] = []
    fail_pop = False

    @staticmethod
    def create(num_sms=None, device_id=None, **kw):
        _FakeGreen.log.append(f"create {num_sms} on {device_id}")
        return _FakeGreen()

    def set_context(self):
        _FakeGreen.log.append("set")

    def pop_context(self):
        _FakeGreen.log.append("pop")
        if _FakeGreen.fail_pop:
            raise RuntimeError("INTERNAL ASSERT FAILED")


@pytest.fixture
def fake_green(monkeypatch, fake_gpu):
    module = types.SimpleNamespace(GreenContext=_FakeGreen, SUPPORTED=True)
    monkeypatch.setattr(limit, "_green_contexts", lambda: module)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "set_device", lambda *a: _FakeGreen.log.append("primary"))
    _FakeGreen.log, _FakeGreen.fail_pop = [], False
    return _FakeGreen


def test_enter_exit_and_in_thread_autotuning(fake_green):
    import torch._inductor.config as config

    config_before = config.autotune_in_subproc
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with iso.limit_sms(45) as limited:  # sm_89: steps of 2 -> 46
            assert config.autotune_in_subproc is False
            assert (limited.requested, limited.sms, limited.total) == (45, 46, 46)
    assert fake_green.log == ["create 46 on 0", "set", "pop"]
    assert any("using 46 SMs" in str(w.message) for w in caught)
    assert config.autotune_in_subproc == config_before


def test_failed_pop_restores_primary_context_and_warns(fake_green):
    fake_green.fail_pop = True
    with pytest.warns(RuntimeWarning, match="pop_context failed"), iso.limit_sms(46):
        pass
    assert fake_green.log[-2:] == ["pop", "primary"]


def test_exception_inside_still_leaves(fake_green):
    with pytest.raises(KeyError), iso.limit_sms(46):
        raise KeyError("inside")
    assert fake_green.log[-1] == "pop"


def test_green_context_stream_path_where_it_exists(fake_green, monkeypatch):
    """torch 2.11 and 2.13 have GreenContext.Stream(): no set_context/pop_context."""
    import contextlib

    class WithStream(_FakeGreen):
        @staticmethod
        def create(num_sms=None, device_id=None, **kw):
            _FakeGreen.log.append(f"create {num_sms} on {device_id}")
            return WithStream()

        def Stream(self):  # noqa: N802 - torch's name
            _FakeGreen.log.append("stream")
            return "green-stream"

    @contextlib.contextmanager
    def stream(value):
        _FakeGreen.log.append(f"enter {value}")
        yield
        _FakeGreen.log.append("exit")

    module = types.SimpleNamespace(GreenContext=WithStream, SUPPORTED=True)
    monkeypatch.setattr(limit, "_green_contexts", lambda: module)
    monkeypatch.setattr(torch.cuda, "stream", stream)
    with iso.limit_sms(46):
        pass
    assert fake_green.log == ["create 46 on 0", "stream", "enter green-stream", "exit"]


def test_total_sms_are_the_real_ones_under_simulate_sms(fake_green):
    with iso.override(simulate_sms=16, verify=False), iso.limit_sms(46) as limited:
        assert limited.total == 46 and limited.sms == 46  # the fake GPU's real 46 SMs


@pytest.mark.gpu
def test_autotune_timings_inside_are_the_restricted_ones():
    """A 4096^3 fp16 GEMM, and the autotuner's own extern timing, are slower on 32 SMs."""
    import time

    import torch._inductor.config as config

    a = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)
    b = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)

    def gemm_ms() -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(20):
            a @ b
        torch.cuda.synchronize()
        return (time.perf_counter() - start) / 20 * 1e3

    def autotuned_extern_ms() -> float:
        torch._dynamo.reset()
        iso.clear_decisions()
        with config.patch(fx_graph_cache=False, autotune_local_cache=False), \
                iso.override(max_choices=0):
            torch.compile(lambda x, y: x @ y, mode="max-autotune-no-cudagraphs")(a, b)
        (event,) = iso.decisions()
        return min(v for v in event["timings"].values() if v is not None)

    gemm_ms()
    full, full_tuned = gemm_ms(), autotuned_extern_ms()
    with iso.limit_sms(32) as limited:
        restricted, restricted_tuned = gemm_ms(), autotuned_extern_ms()
    assert limited.sms == 32
    assert restricted > 1.5 * full
    assert restricted_tuned > 1.5 * full_tuned
    assert gemm_ms() < 1.2 * full  # restored
