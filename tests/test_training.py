"""Training: backward GEMMs compiled under the settings of their forward; gradient checks.

On CPU without freezing Inductor offers one choice per backward GEMM (the extern ``mm``):
no real benchmarking, but the op goes through the autotuner, so a decision is recorded
when, and only when, the backward is compiled under the settings. On a GPU the same path
autotunes, caps and verifies Triton templates.
"""

from __future__ import annotations

import copy

import pytest
import torch

import inductor_sm_override as iso


def _non_lazy_backward() -> bool:
    from inductor_sm_override.torch_plan import compat

    return compat.current_plan().hooks["non_lazy_backward"]


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not _non_lazy_backward(),
        reason="this torch has no force_non_lazy_backward_lowering (2.8, 2.9): AOT autograd "
        "compiles the backward at the first .backward() (under the same settings, through "
        "the bound inner compile: tests/test_compile_scope.py)"),
]

MODE = "max-autotune-no-cudagraphs"


def _mlp():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 16)).train()
    return model, torch.randn(8, 32)


def _backward_mms(decisions):
    """The plain ``mm`` GEMMs: in this model only the backward has them (forward: addmm)."""
    return [d for d in decisions if d["name"] == "mm"]


def test_block_compiles_the_backward_inside_the_block():
    model, x = _mlp()
    torch._dynamo.reset()
    iso.clear_decisions()
    with iso.override():
        y = torch.compile(model, mode=MODE)(x)
        inside = iso.decisions()
    assert _backward_mms(inside), [d["name"] for d in inside]  # before any .backward()
    shapes = sorted(tuple(map(tuple, d["shapes"])) for d in _backward_mms(inside))
    assert ((8, 16), (16, 64)) in shapes  # grad of the hidden activation: dY @ W2
    y.sum().backward()  # after the block: nothing left to compile lazily
    assert len(iso.decisions()) == len(inside)
    assert model[0].weight.grad is not None


@pytest.fixture(scope="module")
def trained():
    """iso.compile of a model in training mode, then one optimizer step through it."""
    model, x = _mlp()
    reference = copy.deepcopy(model)
    torch._dynamo.reset()
    iso.clear_decisions()
    compiled = iso.compile(model, (x,), mode=MODE, max_choices=5)  # own FX-cache key
    at_compile = iso.decisions()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = compiled(x).pow(2).sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    opt.step()
    after_step = iso.decisions()
    return {"model": model, "reference": reference, "x": x, "compiled": compiled,
           "at_compile": at_compile, "after_step": after_step, "grads": grads}


def test_iso_compile_of_a_training_model_checks_gradients(trained):
    compiled = trained["compiled"]
    assert compiled.trains and compiled.used == "override", compiled.checks
    check = compiled.checks[0]
    assert check.passed and check.grad_max_abs is not None and check.grad_max_abs < 1e-4
    assert _backward_mms(trained["at_compile"])  # backward compiled under the settings


def test_training_step_compiles_once_and_matches_eager(trained):
    assert len(trained["after_step"]) == len(trained["at_compile"])  # no second compile
    reference, x = trained["reference"], trained["x"]
    reference(x).pow(2).sum().backward()
    for name, p in reference.named_parameters():
        torch.testing.assert_close(trained["grads"][name], p.grad, rtol=1e-4, atol=1e-5)


def test_a_wrong_backward_is_caught_by_the_gradient_check(monkeypatch):
    """Fault injection: break only the backward (plain mm; the forward uses addmm)."""
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config
    from torch._inductor import lowering

    model, x = _mlp()
    mm = torch.ops.aten.mm.default
    real = lowering.lowerings[mm]
    mul = lowering.lowerings[torch.ops.aten.mul.Tensor]
    monkeypatch.setitem(lowering.lowerings, mm, lambda *a, **k: mul(real(*a, **k), 2.0))
    torch._dynamo.reset()
    with inductor_config.patch(fx_graph_cache=False), \
            functorch_config.patch(enable_autograd_cache=False):
        compiled = iso.compile(model, (x,), mode="default")
    override = compiled.checks[0]
    assert not override.passed and override.reason.startswith("grad[")
    assert override.path.startswith("grad[")
    assert override.max_abs is not None and override.max_abs < 1e-4  # the forward was right
    assert compiled.used == "eager"
    torch._dynamo.reset()  # no graph with the broken lowering stays in dynamo's cache


def test_cache_hits_are_visible():
    """Case 8: the same compile again (a new process, or after a dynamo reset) is served from
    the FX graph cache: no autotuning, but cache_hit events (key, settings), fwd and bwd."""
    model, x = _mlp()
    runs = []
    for _ in range(2):
        torch._dynamo.reset()
        iso.clear_decisions()
        iso.clear_cache_hits()
        with iso.override(max_choices=2):
            torch.compile(model, mode=MODE)(x).sum().backward()
        runs.append((iso.decisions(), iso.cache_hits()))
    (first, first_hits), (second, hits) = runs
    assert first and not first_hits
    assert not second and hits
    assert {hit["backward"] for hit in hits} == {False, True}
    for hit in hits:
        assert hit["event"] == "cache_hit" and hit["key"] and hit["settings"]["max_choices"] == 2
