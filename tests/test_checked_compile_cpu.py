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
    assert iso.status()["active"] is None  # the settings are bound to the compiled function
    assert iso.status()["patched"] is False  # held only while compiling


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


def test_prefer_fastest_times_both_and_says_why(cpu_model, tmp_path):
    model, x = cpu_model
    report = tmp_path / "iso.jsonl"
    torch._dynamo.reset()
    with inductor_config.patch(freezing=True), torch.no_grad():
        compiled = iso.compile(model, example_inputs=(x,), prefer="fastest", report=str(report))
    stages = {c.stage: c for c in compiled.checks}
    assert set(stages) == {"override", "plain"}
    forced, plain = stages["override"], stages["plain"]
    assert forced.passed and plain.passed and forced.time_ms > 0 and plain.time_ms > 0
    expected = "override" if forced.time_ms < (1 - 0.02) * plain.time_ms else "plain"
    assert compiled.used == expected
    assert compiled.choice.startswith(f"{expected} kept")  # which, and by how much
    assert f"{forced.time_ms:.3f} ms" in compiled.choice and f"{plain.time_ms:.3f} ms" in \
        compiled.choice
    assert forced.choice == plain.choice == compiled.choice
    import json

    events = [json.loads(line) for line in report.read_text().splitlines()]
    (event,) = [e for e in events if e["event"] in ("fallback", "choice")]
    assert event["used"] == expected and event["reason"] == compiled.choice
    assert event["event"] == ("choice" if expected == "override" else "fallback")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


def test_fastest_choice_text_names_the_faster_and_the_margin():
    from inductor_sm_override.api.checked import choose_faster

    assert choose_faster(0.10, 0.35) == (
        "override", "override kept: 71.4% faster than plain (override 0.100 ms, plain "
        "0.350 ms per call)")
    stage, why = choose_faster(0.35, 0.10)
    assert stage == "plain" and "3.50x the plain time" in why and "0.350 ms" in why
    stage, why = choose_faster(0.099, 0.100)
    assert stage == "plain" and "only 1.0% faster" in why and "more than 2%" in why


def test_check_inputs_are_cloned_with_their_aliasing():
    """ids passed as input and as labels= stay one tensor in the check's copy (dynamo
    guards on it); views keep their strides and share one copied storage."""
    from inductor_sm_override.checks.outputs import clone

    ids = torch.arange(12).reshape(3, 4)
    x = torch.randn(4, 6, requires_grad=True)
    strided = x.detach()[:, ::2]
    args, kwargs = clone(((ids, x, strided, x.detach()[1:]), {"labels": ids, "n": 3}))
    assert args[0] is kwargs["labels"] and args[0] is not ids
    assert torch.equal(args[0], ids) and kwargs["n"] == 3
    assert args[1].requires_grad and args[1].is_leaf and args[1] is not x
    assert args[2].stride() == strided.stride() and torch.equal(args[2], strided)
    assert args[2].untyped_storage().data_ptr() == args[3].untyped_storage().data_ptr()
    assert args[3].storage_offset() == 6
    assert args[2].untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
    args[0].add_(1)
    assert torch.equal(ids, torch.arange(12).reshape(3, 4))  # the user's input untouched


# --- issue 13: real models (cheap: mode="default", tiny models) ---------------------------

FAST = "default"  # no autotuning: these tests are about the model-level layer


class Box:
    """An opaque output object holding tensors (like an HF cache); no __eq__."""

    def __init__(self, keys, values):
        self.keys, self.values = keys, values


class BoxModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)

    def forward(self, x, scale=1.0):
        y = torch.relu(self.lin(x)) * scale
        return {"out": y, "cache": Box([y * 2], [y + 1]), "n": 3}


def _box_inputs():
    torch.manual_seed(0)
    return BoxModel().eval(), torch.randn(4, 8)


def test_case1_opaque_output_objects_are_compared_by_their_tensors():
    model, x = _box_inputs()
    with torch.no_grad():
        compiled = iso.compile(model, (x,), mode=FAST)
    assert compiled.used == "override", compiled.checks
    check = compiled.checks[0]
    assert check.passed and check.max_abs is not None and check.max_abs < 1e-5


def test_case1_structure_mismatch_names_the_path():
    from inductor_sm_override.checks.outputs import compare_trees

    a = {"out": torch.ones(2), "cache": Box([torch.ones(2)], [torch.ones(2)])}
    b = {"out": torch.ones(2), "cache": Box([torch.ones(2), torch.ones(2)], [torch.ones(2)])}
    check = compare_trees(a, b)
    assert not check.passed and "output['cache'].keys[1]" in check.reason
    wrong = {"out": torch.ones(2), "cache": Box([torch.ones(2) * 3], [torch.ones(2)])}
    check = compare_trees(wrong, a)
    assert not check.passed and check.path == "output['cache'].keys[0]"


def test_case1_eager_fallback_is_checked_honestly(monkeypatch):
    """No passed=True with max_abs=inf: the fallback is compared like the stages."""
    from torch._inductor import lowering

    model, x = _box_inputs()
    relu = torch.ops.aten.relu.default
    real = lowering.lowerings[relu]
    mul = lowering.lowerings[torch.ops.aten.mul.Tensor]
    monkeypatch.setitem(lowering.lowerings, relu, lambda t: mul(real(t), 2.0))
    torch._dynamo.reset()
    with inductor_config.patch(fx_graph_cache=False), torch.no_grad():
        compiled = iso.compile(model, (x,), mode=FAST)
    assert compiled.used == "eager"
    assert [c.stage for c in compiled.checks] == ["override", "plain", "eager"]
    assert "output['out']" in compiled.checks[0].reason
    eager = compiled.checks[-1]
    assert eager.passed and eager.max_abs is not None and eager.max_abs < 1e-5


def test_case6_example_inputs_are_checked_with_the_fix_named():
    model, x = _box_inputs()
    with torch.no_grad():
        single = iso.compile(model, x, mode=FAST)  # a bare tensor is one input
        assert single.used == "override"
        torch.testing.assert_close(single(x)["out"], model(x)["out"])
        with pytest.raises(TypeError, match=r"example_kwargs"):
            iso.compile(model, {"x": x}, mode=FAST)
        with pytest.raises(TypeError, match=r"example_inputs=\(x,\)"):
            iso.compile(model)
        with pytest.raises(TypeError, match=r"example_inputs=\(x,\)"):
            iso.compile(model, None)
        with pytest.raises(TypeError, match=r"example_kwargs must be a dict"):
            iso.compile(model, (x,), example_kwargs=[("scale", 2.0)])
        with pytest.raises(TypeError, match="tuple of positional inputs"):
            iso.compile(model, 3.0)
        with pytest.raises(iso.SettingsError, match=r"example_kwargs=\{"):
            iso.compile(model, (x,), scale=2.0)


def test_case6_keyword_inputs_reach_the_model():
    model, x = _box_inputs()
    with torch.no_grad():
        compiled = iso.compile(model, (x,), example_kwargs={"scale": 3.0}, mode=FAST)
        assert compiled.used == "override"
        torch.testing.assert_close(compiled(x, scale=3.0)["out"], model(x, scale=3.0)["out"])


class Counting(torch.nn.Module):
    """Train-mode state and an in-place change of its input."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)
        self.bn = torch.nn.BatchNorm1d(8)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        self.calls += 1
        x.mul_(2.0)
        return self.bn(self.lin(x))


def test_case5_checks_leave_the_model_and_the_inputs_alone():
    torch.manual_seed(0)
    model = Counting().train()
    x = torch.randn(4, 8)
    before_x = x.clone()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    compiled = iso.compile(model, (x,), mode=FAST)
    assert compiled.used == "override", compiled.checks
    assert torch.equal(x, before_x)  # the user's input is not scaled
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name  # calls, running stats, batches
    assert int(model.calls) == 0 and int(model.bn.num_batches_tracked) == 0
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    compiled(x)  # the returned callable runs the user's model
    assert int(model.calls) == 1


class TracingOnlyFailure(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)

    def forward(self, x):
        if torch.compiler.is_compiling():
            raise RuntimeError("only while traced")
        return self.lin(x)


def test_case7_nothing_compiled_is_not_called_override():
    torch.manual_seed(0)
    model, x = TracingOnlyFailure().eval(), torch.randn(4, 8)
    with torch.no_grad():
        compiled = iso.compile(model, (x,), mode=FAST)
    assert compiled.used == "eager"
    first = compiled.checks[0]
    assert first.stage == "override" and not first.passed and first.graphs == 0
    assert "compiled no graph" in first.reason


def test_case4_stochastic_model_is_checked_under_one_seed():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Dropout(0.5)).train()
    x = torch.randn(8, 16)
    compiled = iso.compile(model, (x,), mode=FAST)
    assert compiled.stochastic == "seeded" and compiled.used == "override"
    check = compiled.checks[0]
    assert check.reference == "eager (same seed)" and "eager's own error" not in check.reason
    assert check.max_abs is not None and check.max_abs < 1e-5  # was 2.8 "within 4x eager"
    assert check.grad_max_abs is not None and check.grad_max_abs < 1e-5
    torch.manual_seed(7)
    got = compiled(x)
    torch.manual_seed(7)
    torch.testing.assert_close(got, model(x))  # compiled code draws eager's numbers


class Unreproducible(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)
        self.calls = 0

    def forward(self, x):
        self.calls += 1  # a Python-side source of randomness no seed resets
        return self.lin(x) + float(self.calls % 7)


def test_case4_unreproducible_model_is_never_passed():
    torch.manual_seed(0)
    model, x = Unreproducible().eval(), torch.randn(4, 8)
    with torch.no_grad():
        compiled = iso.compile(model, (x,), mode=FAST)
    assert compiled.stochastic == "unreproducible"
    assert compiled.used == "eager"
    assert all("not checkable" in c.reason for c in compiled.checks[:2])


def test_case3_second_compile_with_other_settings_compiles_anew():
    """Each iso.compile compiles under its own settings (also inside an outer block); the
    earlier results keep working with their own kernels (no recompile, no trap warning)."""
    import warnings

    torch.manual_seed(0)
    lin, x = torch.nn.Linear(64, 32).eval(), torch.randn(16, 64)
    torch._dynamo.reset()
    iso.clear_decisions()
    with inductor_config.patch(freezing=True), torch.no_grad(), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        c1 = iso.compile(lin, (x,), max_choices=1)
        n1 = len(iso.decisions())
        c2 = iso.compile(lin, (x,), max_choices=2, budget_s=10)
        n2 = len(iso.decisions())
        with iso.override(max_choices=3):
            c3 = iso.compile(lin, (x,))
        n3 = len(iso.decisions())
        for compiled in (c1, c2, c3):
            torch.testing.assert_close(compiled(x), lin(x))
        n4 = len(iso.decisions())
    assert [c.used for c in (c1, c2, c3)] == ["override"] * 3
    assert 1 <= n1 < n2 < n3 and n4 == n3
    assert "budget" in iso.decisions()[n1]  # c2's own settings were in force
    assert not [w for w in caught if "compiled outside" in str(w.message)
                or "under different settings" in str(w.message)]
