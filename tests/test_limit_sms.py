"""iso.limit_sms: rounding, clear errors, context handling (a fake green context on CPU);
the real timing check runs on a GPU (marked gpu)."""

from __future__ import annotations

import sys
import types
import warnings

import pytest
import torch

import inductor_sm_override as iso
from inductor_sm_override.api import limit


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


class _FakeEvent:
    """``torch.Event``/``torch.cuda.Event``: ``query()`` is True once the GPU got there."""

    def __init__(self, stream):
        self.stream, self.reached = stream, False

    def query(self):
        return self.reached


class _FakeStream:
    """What ``GreenContext.Stream()`` returns (2.11: ``torch.Stream``; 2.13:
    ``torch.cuda.Stream``) and ``torch.cuda.current_stream()``: ``wait_stream`` and
    ``record_event`` as torch defines them."""

    def __init__(self, name):
        self.name, self.events = name, []

    def wait_stream(self, other):
        _FakeGreen.log.append(f"{self.name} waits for {other.name}")

    def record_event(self, event=None):
        event = event or _FakeEvent(self)
        self.events.append(event)
        _FakeGreen.log.append(f"event on {self.name}")
        return event

    def __repr__(self):
        return self.name


class _WithStream(_FakeGreen):
    """torch 2.11 / 2.13 ``GreenContext`` (``create``, ``set_context``, ``pop_context``,
    ``Stream``); 2.13's ``create`` is keyword-only, as called."""

    @staticmethod
    def create(*, num_sms=None, device_id=None, **kw):
        _FakeGreen.log.append(f"create {num_sms} on {device_id}")
        return _WithStream()

    def Stream(self):  # noqa: N802 - torch's name
        _FakeGreen.log.append("stream")
        self.stream = _FakeStream("green")
        return self.stream


@pytest.fixture
def stream_green(fake_green, monkeypatch):
    import contextlib

    caller = _FakeStream("caller")

    @contextlib.contextmanager
    def stream(value):  # torch.cuda.stream: sets, then restores, the current stream
        _FakeGreen.log.append(f"enter {value}")
        yield
        _FakeGreen.log.append("exit")

    module = types.SimpleNamespace(GreenContext=_WithStream, SUPPORTED=True)
    monkeypatch.setattr(limit, "_green_contexts", lambda: module)
    monkeypatch.setattr(torch.cuda, "stream", stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: caller)
    monkeypatch.setattr(limit, "_retired", [], raising=False)
    return caller


def test_green_context_stream_path_where_it_exists(stream_green):
    """torch 2.11 and 2.13 have GreenContext.Stream(): no set_context/pop_context. The
    green stream waits for the caller's work; on exit the caller's stream waits for the
    green stream's (torch's StreamContext.__exit__ only restores the stream)."""
    with iso.limit_sms(46):
        _FakeGreen.log.append("work")
    assert _FakeGreen.log == ["create 46 on 0", "stream", "green waits for caller",
                              "enter green", "work", "exit", "caller waits for green",
                              "event on green"]


def test_green_context_outlives_the_block_until_its_work_is_done(stream_green):
    import gc
    import weakref

    limited = iso.limit_sms(46)
    with limited:
        pass
    context = weakref.ref(limited._ctx)
    (done,) = limited._ctx.stream.events
    del limited
    gc.collect()
    assert context() is not None  # work still queued: the context is kept
    with iso.limit_sms(46):  # a later block lets go of nothing unfinished
        assert context() is not None
    done.reached = True
    with iso.limit_sms(46):
        pass
    gc.collect()
    assert context() is None  # finished: released


def test_exception_inside_still_joins_the_streams(stream_green):
    with pytest.raises(KeyError), iso.limit_sms(46):
        raise KeyError("inside")
    assert _FakeGreen.log[-3:] == ["exit", "caller waits for green", "event on green"]


def test_total_sms_are_the_real_ones_under_simulate_sms(fake_green):
    with iso.override(simulate_sms=16, verify=False), iso.limit_sms(46) as limited:
        assert limited.total == 46 and limited.sms == 46  # the fake GPU's real 46 SMs


@pytest.mark.gpu
def test_autotune_timings_inside_are_the_restricted_ones():
    """A 4096^3 fp16 GEMM, and the autotuner's own extern timing, are slower on 32 SMs."""
    import statistics
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
        # max_choices=1: the extern and one template are benchmarked (max_choices=0 would
        # leave a sole ATen choice that Inductor takes without timing it)
        torch._dynamo.reset()
        iso.clear_decisions()
        with config.patch(fx_graph_cache=False, autotune_local_cache=False), \
                iso.override(max_choices=1):
            torch.compile(lambda x, y: x @ y, mode="max-autotune-no-cudagraphs")(a, b)
        (event,) = iso.decisions()
        (extern,) = event["externs"]
        assert event["timings"][extern] is not None, event
        return event["timings"][extern]

    gemm_ms()
    full, full_tuned = gemm_ms(), autotuned_extern_ms()
    caller = torch.cuda.current_stream()
    with iso.limit_sms(32) as limited:
        assert torch.cuda.current_stream() != caller  # the green context's stream
        restricted, restricted_tuned = gemm_ms(), autotuned_extern_ms()
    assert limited.sms == 32
    assert torch.cuda.current_stream() == caller  # restored
    assert restricted > 1.5 * full
    assert restricted_tuned > 1.5 * full_tuned
    # restored: nearer the full GPU's time than the restricted one (median of 5)
    assert statistics.median(gemm_ms() for _ in range(5)) < (full + restricted) / 2


@pytest.mark.gpu
def test_result_read_after_the_block_is_complete():
    """Work queued on the green stream is finished before the caller's stream reads its
    result, also when the limit_sms object is dropped with that work still queued."""
    import gc

    y = torch.zeros(1 << 22, device="cuda")
    torch.cuda.synchronize()
    limited = iso.limit_sms(8)
    with limited:
        torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU time on the green stream, then
        y.fill_(1.0)  # the write the caller will read
    del limited
    gc.collect()  # the green context must survive until its work is done
    seen = y.clone()  # on the caller's stream, right away
    torch.cuda.synchronize()
    assert bool(seen.eq(1.0).all())


def test_the_limit_in_force_is_recorded_in_manifests(fake_green):
    """A graph autotuned inside limit_sms was timed on that many SMs: its manifest's
    producer says so, next to the real and simulated counts."""
    from inductor_sm_override.core.settings import Settings
    from inductor_sm_override.torch_plan.hardware import device_info, limited_sms

    assert limited_sms() is None
    with iso.limit_sms(40) as outer:
        assert limited_sms() == limited_sms(0) == outer.sms == 40
        with iso.limit_sms(20):
            assert limited_sms() == 20
            info = device_info(Settings(simulate_sms=16), "cuda:0")
            assert (info["sms"], info["simulated_sms"], info["limited_sms"]) == (46, 16, 20)
        assert limited_sms(1) is None  # another device: not limited
        assert limited_sms() == 40
    assert limited_sms() is None
    assert device_info(Settings(), [{"device": "cuda:0"}])["limited_sms"] is None
