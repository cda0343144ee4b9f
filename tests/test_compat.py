"""Version guards: fake module layouts (no old torch needed) and the live torch."""

from __future__ import annotations

import functools
import inspect
import sys
import warnings
from types import ModuleType

import pytest

import inductor_sm_override as iso
from inductor_sm_override.compile_scope import PATCHES
from inductor_sm_override.torch_plan import compat


def _gate_module(gate) -> ModuleType:
    module = ModuleType("torch._inductor.utils")
    if gate is not None:
        module.is_big_gpu = gate
    return module


@functools.cache
def _good_gate(index_or_device=0):
    return False


@functools.lru_cache(None)
def _two_arg_gate(index, strict):
    return False


def _use_fake(monkeypatch, version: str, modules: dict[str, ModuleType]) -> compat.Plan:
    plan = compat.build_plan(version, modules)
    monkeypatch.setattr(compat, "current_plan", lambda refresh=False: plan)
    monkeypatch.setattr(compat, "_warned", set())
    return plan


@pytest.mark.parametrize(
    "gate, problem",
    [(None, "no is_big_gpu found"), (_two_arg_gate, "signature"), (42, "not callable")],
)
def test_unknown_layout_warns_once_patches_nothing_block_runs(monkeypatch, gate, problem):
    module = _gate_module(gate)
    plan = _use_fake(monkeypatch, "9.1.0", {"torch._inductor.utils": module})
    assert not plan.supported and problem in plan.problems[0]
    ran = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            with iso.override():
                ran.append(iso.status()["patched"])
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "9.1.0" in messages[0] and problem in messages[0]
    assert ran == [False, False, False]
    assert vars(module).get("is_big_gpu") is gate
    assert not PATCHES.installed


def test_strict_raises_naming_version_and_what_is_missing(monkeypatch):
    _use_fake(monkeypatch, "9.1.0", {"torch._inductor.utils": _gate_module(None)})
    with pytest.raises(iso.UnsupportedTorchError) as err, iso.override(strict=True):
        pytest.fail("the block must not run")
    assert "9.1.0" in str(err.value) and "is_big_gpu" in str(err.value)
    assert iso.status()["active"] is None and not PATCHES.installed


def test_untested_matching_layout_is_patched_with_one_warning(monkeypatch, fake_gpu):
    utils = _gate_module(_good_gate)
    mm = ModuleType("torch._inductor.kernel.mm")
    mm.is_big_gpu = _good_gate  # binds the gate by name, like `from ..utils import is_big_gpu`
    other = ModuleType("torch._inductor.other")
    other.is_big_gpu = lambda index_or_device=0: False  # a different function: not a site
    plan = _use_fake(monkeypatch, "9.9.0", {"torch._inductor.utils": utils,
                                            "torch._inductor.kernel.mm": mm,
                                            "torch._inductor.other": other})
    assert plan.supported and not plan.tested
    assert plan.site_names() == ["torch._inductor.utils.is_big_gpu",
                                 "torch._inductor.kernel.mm.is_big_gpu"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with iso.override(verify=False):  # the fake layout has no autotune hooks to verify with
            assert utils.is_big_gpu is not _good_gate and mm.is_big_gpu is utils.is_big_gpu
            assert mm.is_big_gpu(0) is True
        with iso.override(verify=False):
            pass
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "9.9.0" in messages[0] and "not in the tested" in messages[0]
    assert utils.is_big_gpu is _good_gate and mm.is_big_gpu is _good_gate
    assert other.is_big_gpu(0) is False


def test_failed_install_is_rolled_back(monkeypatch):
    utils = _gate_module(_good_gate)
    _use_fake(monkeypatch, "2.13.0", {"torch._inductor.utils": utils})

    def broken(plan):
        from inductor_sm_override.core.patching import Patch

        return [Patch(utils, "is_big_gpu", object()), Patch(None, "x", 1)]  # second fails

    monkeypatch.setattr("inductor_sm_override.hooks.gate.build_patches", broken)
    with pytest.raises(TypeError), iso.override(verify=False):
        pass
    assert utils.is_big_gpu is _good_gate and not PATCHES.installed
    assert iso.status()["active"] is None


def test_live_torch_is_supported_and_in_the_table():
    import torch

    plan = compat.current_plan()
    assert plan.supported, plan.problems
    assert plan.tested, f"torch {torch.__version__} missing from VERSION_TABLE"
    entry = plan.entry
    live = inspect.unwrap(plan.gate)
    params = list(inspect.signature(live).parameters)
    assert params[0] in entry.gate_signature
    imported = {name for name in entry.binding_sites if name in sys.modules}
    assert imported <= {m.__name__ for m in plan.sites}
    assert plan.hooks["preprocessing_fn"] == entry.preprocessing_fn
    assert plan.hooks["feedback_saver"] == entry.feedback_saver
    assert plan.hooks["benchmark_choice"] == entry.benchmark_choice


def test_missing_hooks_fail_closed(monkeypatch, fake_gpu):
    """A torch without the verify hook keeps its own gate answer while verify is asked for."""
    utils = _gate_module(_good_gate)
    plan = _use_fake(monkeypatch, "2.7.0", {"torch._inductor.utils": utils})
    assert plan.supported and not plan.hooks["benchmark_choice"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with iso.override():
            assert utils.is_big_gpu(0) is False  # verify=True cannot be honoured: gated
        with iso.override(verify=False):
            assert utils.is_big_gpu(0) is True  # the user accepted unverified templates
    assert any("verification" in str(w.message) for w in caught)
    with pytest.raises(iso.UnsupportedTorchError, match="verification"), \
            iso.override(strict=True):
        pass


def test_table_covers_every_release_from_2_4():
    releases = {f"2.{minor}" for minor in range(4, 14)}
    assert releases <= set(compat.VERSION_TABLE)
    for release, entry in compat.VERSION_TABLE.items():
        assert entry.source and entry.gate_signature.startswith("is_big_gpu("), release


def test_live_plan_knows_the_compile_entry_the_lazy_backward_switch_and_the_lock():
    import torch._dynamo.convert_frame as convert_frame
    import torch._functorch.config as functorch_config
    import torch._inductor.compile_fx as entry

    plan = compat.current_plan()
    assert plan.hooks["compile_entry"] and plan.entry_owner is entry
    assert plan.inner_compile is entry.compile_fx_inner  # compile_fx's default inner compile
    assert "inner_compile" in plan.entry_params
    assert plan.compile_lock is convert_frame.compile_lock
    has_switch = hasattr(functorch_config, "force_non_lazy_backward_lowering")
    assert plan.hooks["non_lazy_backward"] is has_switch  # 2.11, 2.13, 2.15: True
    changes = plan.backward_changes()
    assert (changes is not None) is has_switch
    if changes is not None:
        assert changes.module is functorch_config
        assert dict(changes.changes) == {"force_non_lazy_backward_lowering": True}


def test_compile_entry_without_inner_compile_patches_nothing(monkeypatch):
    """A future compile_fx whose settings could not be carried to its graphs: fail closed."""
    utils = _gate_module(_good_gate)
    entry = ModuleType("torch._inductor.compile_fx")
    entry.compile_fx = lambda model_, example_inputs_, config_patches=None: None
    plan = _use_fake(monkeypatch, "9.2.0", {"torch._inductor.utils": utils,
                                            "torch._inductor.compile_fx": entry})
    assert not plan.supported and "inner_compile" in plan.problems[0]
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with iso.override():
            assert iso.status()["patched"] is False
    assert utils.is_big_gpu is _good_gate


def test_mode_and_options_read_as_torch_compile_reads_them():
    assert compat.inductor_mode_config("max-autotune-no-cudagraphs", None) == {
        "max_autotune": True, "coordinate_descent_tuning": True}
    assert compat.inductor_mode_config(None, {"triton.cudagraphs": False}) == {
        "triton.cudagraphs": False}
    assert compat.inductor_mode_config("default", None) == {}
    with pytest.raises(RuntimeError, match="Unrecognized mode"):
        compat.inductor_mode_config("fastest-please", None)
