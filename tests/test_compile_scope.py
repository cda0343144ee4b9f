"""Settings are applied where Inductor compiles (compile_scope.py), for that compile only.

Blocks and the env layer choose settings; ``iso.backend`` binds them to a compiled function.
Every graph of a compile (the forward, a backward compiled lazily after the block, a
recompile for a new shape) compiles under them, and calls do no toolkit work.
Cheap compiles (``mode="default"``, tiny functions) unless a test needs autotuning.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import warnings

import pytest
import torch
import torch._inductor.config as inductor_config
import torch._inductor.utils as utils

import inductor_sm_override as iso
from inductor_sm_override import compile_scope
from inductor_sm_override.api import env as iso_env
from inductor_sm_override.compile_scope import PATCHES
from inductor_sm_override.core import events, state
from inductor_sm_override.core.settings import settings_key
from inductor_sm_override.torch_plan import compat

pytestmark = pytest.mark.slow


@pytest.fixture
def graphs():
    """Every graph compiled under override settings: (settings, thread, live config)."""
    seen: list[dict] = []

    @contextlib.contextmanager
    def hook(settings):
        salt = getattr(inductor_config.post_grad_custom_post_pass, "salt", None)
        seen.append({"settings": settings, "thread": threading.current_thread().name,
                     "active": state.current(), "salted": salt == settings_key(settings),
                     "search_space": inductor_config.max_autotune_gemm_search_space,
                     "patched": PATCHES.installed})
        yield

    events.GRAPH_SCOPES.append(hook)
    try:
        yield seen
    finally:
        events.GRAPH_SCOPES.remove(hook)


@pytest.fixture
def lazy_backward(monkeypatch):
    """As on a torch without force_non_lazy_backward_lowering (2.8, 2.9): the backward is
    compiled at the first ``.backward()``."""
    monkeypatch.setitem(compat.current_plan().hooks, "non_lazy_backward", False)


def _mlp(width=32):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(width, 64), torch.nn.ReLU(),
                               torch.nn.Linear(64, 16))


def _mms(decisions):
    return [d for d in decisions if d["name"] == "mm"]  # only the backward has plain mm


def test_block_body_keeps_config_the_compile_gets_the_settings(graphs):
    """The block itself changes no config; its compile does, in the compiling thread."""
    torch._dynamo.reset()
    before = inductor_config.post_grad_custom_post_pass
    with iso.override(search_space="EXHAUSTIVE", max_choices=3) as settings:
        assert inductor_config.post_grad_custom_post_pass is before
        assert inductor_config.max_autotune_gemm_search_space == "DEFAULT"
        compiled = torch.compile(lambda x: torch.sin(x) + 1.25, mode="default")
        compiled(torch.ones(4))
        assert inductor_config.post_grad_custom_post_pass is before
    (graph,) = graphs
    assert graph["settings"] == settings and graph["active"] == settings
    assert graph["salted"] and graph["search_space"] == "EXHAUSTIVE" and graph["patched"]
    assert graph["thread"] == threading.current_thread().name


def test_backend_lazy_backward_outside_any_block_uses_the_bound_settings(graphs, lazy_backward):
    model, x = _mlp(), torch.randn(8, 32)
    torch._dynamo.reset()
    iso.clear_decisions()
    compiled = torch.compile(model, backend=iso.backend(max_choices=3, verify=False))
    out = compiled(x)
    assert len(graphs) == 1 and not _mms(iso.decisions())  # the backward is not compiled yet
    assert not PATCHES.installed  # held only while compiling
    out.sum().backward()  # no block anywhere: the bound inner compile applies the settings
    assert [g["settings"].max_choices for g in graphs] == [3, 3]
    assert all(g["salted"] and g["patched"] for g in graphs)
    backward = _mms(iso.decisions())
    assert backward and all(d["verify"] is False for d in backward)  # the bound settings
    assert not PATCHES.installed and iso.status()["active"] is None


@pytest.mark.gpu
def test_cuda_lazy_backward_compiles_under_the_bound_settings(graphs, lazy_backward):
    """On CUDA (torch 2.11) the lazy backward runs on autograd's device thread, which does not
    see the caller's context: the bound inner compile applies the settings there."""
    model = _mlp().cuda().half()
    x = torch.randn(64, 32, device="cuda", dtype=torch.half)
    torch._dynamo.reset()
    iso.clear_decisions()
    compiled = torch.compile(model, backend=iso.backend(max_choices=2))
    out = compiled(x)
    assert len(graphs) == 1 and not _mms(iso.decisions())
    out.float().sum().backward()
    assert len(graphs) == 2, graphs
    backward = graphs[1]
    assert backward["settings"].max_choices == 2 and backward["active"] == backward["settings"]
    assert backward["salted"] and backward["patched"]
    assert _mms(iso.decisions())  # backward GEMMs autotuned (templates offered) under them
    assert model[0].weight.grad is not None and not PATCHES.installed


def test_block_lazy_backward_after_the_block_uses_the_block_settings(graphs, lazy_backward):
    """Before the fix a backward compiled after the block ran with no settings at all."""
    model, x = _mlp(24), torch.randn(8, 24)
    torch._dynamo.reset()
    iso.clear_decisions()
    with iso.override(max_choices=2, verify=False):
        out = torch.compile(model, mode="max-autotune-no-cudagraphs")(x)
    assert not _mms(iso.decisions()) and not PATCHES.installed
    out.sum().backward()
    backward = _mms(iso.decisions())
    assert backward and all(d["verify"] is False for d in backward)
    assert graphs[-1]["settings"].max_choices == 2 and graphs[-1]["salted"]


def test_new_shape_after_the_block_recompiles_under_the_bound_settings(graphs):
    torch._dynamo.reset()
    with iso.override(min_sms=40):
        compiled = torch.compile(lambda x: torch.cos(x) * 2.5,
                                 backend=iso.backend(search_space="EXHAUSTIVE", mode="default"),
                                 dynamic=False)
        compiled(torch.ones(4))
    compiled(torch.ones(6))  # outside the block: a recompile
    with iso.override(min_sms=60):  # inside another block: still the bound settings
        compiled(torch.ones(7))
    assert len(graphs) == 3
    for graph in graphs:
        assert graph["settings"].min_sms == 40  # inherited where iso.backend(...) was made
        assert graph["settings"].search_space == "EXHAUSTIVE" and graph["salted"]


def test_calls_of_a_compiled_function_do_no_toolkit_work(monkeypatch):
    """iso.compile's and iso.backend's results: a call is a call of the compiled code."""
    model, x = _mlp().eval(), torch.randn(8, 32)
    torch._dynamo.reset()
    with torch.no_grad():
        checked = iso.compile(model, (x,), mode="default", max_choices=2)
        bound = torch.compile(model, backend=iso.backend(mode="default"))
        bound(x)
    assert checked.used == "override"
    work: list[str] = []
    for owner, name in ((state, "push"), (state, "push_pinned"), (PATCHES, "acquire"),
                        (compile_scope, "applied")):
        real = getattr(owner, name)
        monkeypatch.setattr(owner, name, functools.partial(
            lambda real, name, *a, **k: (work.append(name), real(*a, **k))[1], real, name))
    with torch.no_grad():
        for _ in range(3):
            torch.testing.assert_close(checked(x), model(x))
            bound(x)
    assert work == []


# --- a gate replaced by another library while the toolkit holds it --------------------------

@functools.lru_cache(None)
def other_librarys_gate(index):
    """Like Unsloth's replacement: its own 80-SM rule, functools-cached."""
    props = torch.cuda.get_device_properties(index)
    return props.multi_processor_count >= 80


def _compile_something():
    torch.compile(lambda x: torch.tanh(x) + 0.75, mode="default")(torch.ones(3))


def _replaced_warnings(caught):
    return [w for w in caught if "was replaced by" in str(w.message)]


def _gate() -> bool:
    """The gate's answer for a fake 46-SM GPU (compiles run outside the fake: CPU)."""
    from inductor_sm_override.testing import fake_cuda_device

    with fake_cuda_device(46):
        return utils.is_big_gpu(0)


@pytest.fixture
def torch_gate():
    """Put torch's own gate back at the end (the newcomer stays after the toolkit ends)."""
    original = vars(utils)["is_big_gpu"]
    yield original
    utils.is_big_gpu = original


def test_gate_replaced_after_the_env_layer_still_opens_and_survives(torch_gate):
    torch._dynamo.reset()
    iso_env.install_base(iso.Settings(min_sms=40), "environment: test")
    try:
        assert _gate() is True
        utils.is_big_gpu = other_librarys_gate
        assert _gate() is False  # the other library's rule, for now
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _compile_something()  # the next compile notices and wraps it
            _compile_something()
        (warning,) = _replaced_warnings(caught)
        assert __name__ in str(warning.message)  # names the module that replaced it
        assert _gate() is True  # the override's rule again
        assert utils.is_big_gpu.__wrapped__ is other_librarys_gate
        replaced = iso.status()["gate_replaced_by"]
        assert replaced["torch._inductor.utils.is_big_gpu"].endswith("other_librarys_gate")
        with iso.override(min_sms=50):
            assert _gate() is False  # an inner block wins: the override's rule
    finally:
        iso_env.uninstall_base()
    assert utils.is_big_gpu is other_librarys_gate  # the newcomer stays


def test_gate_replaced_inside_a_block_opens_at_the_next_compile(torch_gate):
    torch._dynamo.reset()
    with iso.override():
        utils.is_big_gpu = other_librarys_gate
        assert _gate() is False
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _compile_something()
        assert len(_replaced_warnings(caught)) <= 1  # once per newcomer (maybe seen before)
        assert _gate() is True
    assert utils.is_big_gpu is other_librarys_gate
    assert _gate() is False  # its own rule outside, no stale cached answer


# --- iso.backend arguments ------------------------------------------------------------------

def test_backend_mode_and_options_become_config_of_its_compiles(graphs):
    seen = []
    real = compile_scope.applied

    @contextlib.contextmanager
    def spy(binding):
        with real(binding):
            seen.append((inductor_config.max_autotune, inductor_config.coordinate_descent_tuning,
                         inductor_config.fallback_random))
            yield

    torch._dynamo.reset()
    default = iso.backend()
    assert default.config == {"max_autotune": True, "coordinate_descent_tuning": True}
    compile_scope.applied = spy
    try:
        fn = torch.compile(lambda x: torch.sin(x) - 0.5,
                           backend=iso.backend(mode="default", options={"fallback_random": True}))
        fn(torch.ones(4))
        fn2 = torch.compile(lambda x: torch.sin(x) - 0.25, backend=iso.backend(mode="default"),
                            mode="max-autotune-no-cudagraphs")  # torch.compile's mode wins
        fn2(torch.ones(4))
    finally:
        compile_scope.applied = real
    assert seen == [(False, False, True), (True, True, False)]
    assert inductor_config.max_autotune is False and inductor_config.fallback_random is False
    with pytest.raises(RuntimeError, match="no_such_option"):
        iso.backend(options={"no_such_option": 1})
    with pytest.raises(iso.SettingsError, match="max_choices"):
        iso.backend(max_choices=-1)
