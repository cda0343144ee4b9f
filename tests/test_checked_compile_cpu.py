"""iso.compile: eager compile under the settings, model-level check, checked fallback."""

from __future__ import annotations

import pytest
import torch
import torch._inductor.config as inductor_config

import inductor_sm_override as iso

pytestmark = pytest.mark.slow


def test_healthy_model_uses_the_override_and_recompiles_under_it(cpu_model):
    model, x = cpu_model
    torch._dynamo.reset()
    iso.clear_decisions()
    with inductor_config.patch(freezing=True), torch.no_grad():
        compiled = iso.compile(model, example_inputs=(x,), max_choices=4)
        assert compiled.used == "override"
        first = compiled.checks[0]
        assert first.stage == "override" and first.passed and first.reference == "fp64"
        assert first.max_abs is not None and first.max_abs < 1e-4
        compiled_at = len(iso.decisions())
        assert compiled_at == 2  # compiled eagerly, both GEMMs autotuned
        bigger = torch.randn(48, 64)  # a new shape: recompiled inside the same settings
        torch.testing.assert_close(compiled(bigger), model(bigger))
    assert len(iso.decisions()) > compiled_at
    assert iso.status()["active"] is None  # the settings are entered per call only
    compiled.release()
    assert iso.status()["patched"] is False


def test_wrong_lowering_falls_back_to_a_checked_correct_stage(cpu_model, monkeypatch):
    """A bug outside GEMM selection (here: a broken ReLU lowering) is caught at model level."""
    from torch._inductor import lowering

    model, x = cpu_model
    relu = torch.ops.aten.relu.default
    real = lowering.lowerings[relu]
    mul = lowering.lowerings[torch.ops.aten.mul.Tensor]
    monkeypatch.setitem(lowering.lowerings, relu, lambda t: mul(real(t), 2.0))
    torch._dynamo.reset()
    # fx_graph_cache off: a graph with the broken lowering must not be cached for later tests
    with inductor_config.patch(freezing=True, fx_graph_cache=False), torch.no_grad():
        compiled = iso.compile(model, example_inputs=(x,))
    stages = [(c.stage, c.passed) for c in compiled.checks]
    assert stages == [("override", False), ("plain", False), ("eager", True)]
    assert compiled.used == "eager"
    assert "values off" in compiled.checks[0].reason
    torch.testing.assert_close(compiled(x), model(x))
    assert iso.status()["patched"] is False  # nothing held for an eager fallback


def test_bad_arguments_are_rejected_up_front(cpu_model):
    model, x = cpu_model
    with pytest.raises(iso.SettingsError, match="max_choices"):
        iso.compile(model, (x,), max_choices=-1)
    with pytest.raises(ValueError, match="prefer"):
        iso.compile(model, (x,), prefer="fast")


def test_prefer_fastest_times_both_and_keeps_the_faster(cpu_model):
    model, x = cpu_model
    torch._dynamo.reset()
    with inductor_config.patch(freezing=True), torch.no_grad():
        compiled = iso.compile(model, example_inputs=(x,), prefer="fastest")
    stages = {c.stage: c for c in compiled.checks}
    assert set(stages) == {"override", "plain"}
    forced, plain = stages["override"], stages["plain"]
    assert forced.passed and plain.passed and forced.time_ms > 0 and plain.time_ms > 0
    expected = "override" if forced.time_ms < (1 - 0.02) * plain.time_ms else "plain"
    assert compiled.used == expected
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))
    compiled.release()
