"""Every fault kind is rejected, on square and non-square shapes (issue 27).

Fast cases drive Inductor's real selector (``get_inputs``, ``benchmark_choice``, the
feedback saver) with hand-made choices for mm, bmm and addmm; one real compile per op puts
the same kinds into Inductor's C++ GEMM template on the CPU (mm, addmm, bmm, linear) and the
compile still matches eager. The same matrix for Triton templates is marked ``gpu``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch._inductor.config as inductor_config
from selector_harness import GemmTemplate, gemm, quiet_logging, select_inputs

import inductor_sm_override as iso
from inductor_sm_override.hooks import selector
from inductor_sm_override.testing import FAULT_KINDS, NoFaultInjectedWarning, inject_faults

HERE = Path(__file__).parent
KINDS = [k for k in FAULT_KINDS if k != "none"]
SHAPES = {"square": (32, 32, 32), "non-square": (24, 40, 56)}  # (M, K, N)
REASON = {"raise": "RuntimeError: injected fault"}


@pytest.fixture(autouse=True)
def _harness(monkeypatch):
    iso.clear_decisions()
    with quiet_logging(monkeypatch):
        yield


def _kinds(corrupted: list[str]) -> dict[str, str]:
    """name -> kind of what ``inject_faults`` with a list of kinds corrupted."""
    return {name: name.rsplit(":", 1)[-1] for name in corrupted}


def _kinds_for(op: str) -> list[str]:
    return KINDS if op == "addmm" else [k for k in KINDS if k != "epilogue"]


def _run_matrix(op: str, shape: tuple[int, int, int]) -> tuple[dict, dict]:
    """One op with an extern, one right template and a faulty copy of one per kind."""
    m, k, n = shape
    with gemm(op, m, k, n) as (inputs, layout, reference), iso.override(quiet=True), \
            inject_faults("^t_faulty$", _kinds_for(op)) as corrupted:
        choices = [reference, GemmTemplate("t_right", inputs, layout, ms=1e-5),
                   GemmTemplate("t_faulty", inputs, layout)]
        select_inputs(op, choices, inputs, layout)
    (event,) = iso.decisions()
    return event, _kinds(corrupted)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("op", ["mm", "bmm", "addmm"])
def test_every_fault_kind_is_rejected(op, shape):
    event, kinds = _run_matrix(op, SHAPES[shape])
    assert sorted(kinds.values()) == sorted(_kinds_for(op))
    for name, kind in kinds.items():
        reason = event["rejected"].get(name, "")
        assert reason.startswith(REASON.get(kind, f"mismatch vs extern {op}")), (kind, reason)
        assert event["rejected_by"][name] == ("crash" if kind == "raise" else "check")
    assert event["checks"]["t_right"]["passed"] is True  # the seeded inputs are sane
    assert event["winner"] == "t_right"  # the faulty ones claimed 1e-6 ms: none of them won


def test_square_swap_passed_on_torchs_equal_inputs_sanity_baseline(monkeypatch):
    """What the issue found: on torch's own example inputs (drawn under
    ``preserve_rng_state``: a == b) a swapped square GEMM computes the same numbers and
    passes the check. ``OWN_INPUTS`` off is the code before issue 27."""
    monkeypatch.setitem(selector.OWN_INPUTS, "on", False)
    with gemm("bmm", 64, 64, 64, batch=4) as (inputs, layout, reference), \
            iso.override(quiet=True), inject_faults("t_swap", "swap"):
        select_inputs("bmm", [reference, GemmTemplate("t_swap", inputs, layout)], inputs, layout)
    (event,) = iso.decisions()
    assert event["rejected"] == {} and event["winner"] == "t_swap"


class BAThenA(GemmTemplate):
    """A bmm template whose timed output is ``b @ a`` (the issue's reproduction)."""

    def run(self, a, b):
        return b @ a


def test_square_bmm_computing_b_at_a_is_rejected():
    """Failed before issue 27 (the two example inputs were equal): 4x64x64 bmm."""
    with gemm("bmm", 64, 64, 64, batch=4) as (inputs, layout, reference), \
            iso.override(quiet=True):
        select_inputs("bmm", [reference, BAThenA("b_at_a", inputs, layout, ms=1e-6)],
                      inputs, layout)
    (event,) = iso.decisions()
    assert event["rejected"]["b_at_a"].startswith("mismatch vs extern bmm")
    assert event["winner"] == "bmm"


def test_epilogue_kind_without_a_bias_corrupts_nothing_and_says_so():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with gemm("mm") as (inputs, layout, reference), iso.override(quiet=True), \
                inject_faults("t_", "epilogue") as corrupted:
            select_inputs("mm", [reference, GemmTemplate("t_x", inputs, layout)], inputs, layout)
    assert corrupted == []
    (warning,) = [w for w in caught if issubclass(w.category, NoFaultInjectedWarning)]
    assert "'epilogue' needs a bias input (mm: t_x had none)" in str(warning.message)


def test_a_sequence_of_kinds_offers_one_faulty_copy_per_kind():
    with gemm("mm", 24, 40, 56) as (inputs, layout, reference), iso.override(quiet=True), \
            inject_faults("t_", ["swap", "k_tail"]) as corrupted:
        template = GemmTemplate("t_x", inputs, layout)
        select_inputs("mm", [reference, template], inputs, layout)
    assert corrupted == ["t_x:swap", "t_x:k_tail"]
    (event,) = iso.decisions()
    assert event["offered"] == ["mm", "t_x:swap", "t_x:k_tail"]
    assert set(event["rejected"]) == {"t_x:swap", "t_x:k_tail"}
    assert template.benchmarked == 2  # both copies ran the one real kernel


def test_the_mode_keyword_still_works_and_bad_kinds_are_refused():
    with gemm("mm") as (inputs, layout, reference), iso.override(quiet=True), \
            inject_faults("t_", mode="transpose") as corrupted:
        select_inputs("mm", [reference, GemmTemplate("t_x", inputs, layout)], inputs, layout)
    assert corrupted == ["t_x"] and "t_x" in iso.decisions()[-1]["rejected"]
    with pytest.raises(ValueError, match="kind='upside_down'"), inject_faults("t", "upside_down"):
        pass


# --- real compiles: the C++ GEMM template (one compile per op carries every kind) ----------

class Chain(torch.nn.Module):
    """Two GEMMs in a row, square (64 x 64 x 64) then not (64 x 64 x 80); ``op`` mm, addmm
    (beta=0.5: freezing does not turn it into an MKL linear), bmm or linear (nn.Linear
    without bias: frozen into an MKL linear on the CPU, ``x @ W.T`` on a GPU)."""

    def __init__(self, op: str) -> None:
        super().__init__()
        self.op = op
        self.weights = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.randn(64, n) / 8) for n in (64, 80)])
        self.biases = torch.nn.ParameterList([torch.nn.Parameter(torch.randn(n))
                                              for n in (64, 80)])
        self.linears = torch.nn.ModuleList([torch.nn.Linear(64, n, bias=False)
                                            for n in (64, 80)])

    def forward(self, x, *rest):
        for index, (w, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            if self.op == "bmm":
                x = torch.bmm(x, rest[index])
            elif self.op == "addmm":
                x = torch.addmm(bias, x, w, beta=0.5)
            elif self.op == "linear":
                x = self.linears[index](x)
            else:
                x = x @ w
            x = x[..., :64]
        return x

    def inputs(self) -> tuple:
        if self.op != "bmm":
            return (torch.randn(64, 64),)
        return (torch.randn(4, 64, 64), *(torch.randn(4, 64, n) / 8 for n in (64, 80)))


def compile_matrix(op: str) -> dict:
    """Compile :class:`Chain` with every kind injected into the C++ template; what happened.
    ``mm`` runs in a child process with mkldnn off: with it on, freezing turns ``x @ W`` into
    an MKL linear, and switching it off in this process would keep Inductor's once-only
    mkldnn pattern registration off for every later test (``_mkldnn_weight_pack_init``)."""
    torch.manual_seed(0)
    kinds = _kinds_for(op)
    model = Chain(op).eval()
    inputs = model.inputs()
    torch._dynamo.reset()
    iso.clear_decisions()
    with torch.no_grad(), inductor_config.patch(
            freezing=op != "bmm", max_autotune=True, max_autotune_gemm_backends="CPP,ATEN",
            fx_graph_cache=False), \
            inject_faults("cpp_", kinds) as corrupted, iso.override(quiet=True):
        out = torch.compile(model)(*inputs)
    error = (out - model(*inputs)).abs().max().item()
    return {"kinds": kinds, "corrupted": _kinds(corrupted), "error": error,
            "events": iso.decisions()}


@pytest.mark.slow
@pytest.mark.parametrize("op", ["mm", "addmm", "bmm", "linear"])
def test_every_fault_kind_in_the_cpp_template_is_rejected_and_the_compile_is_right(op):
    if op == "mm":
        child = subprocess.run([sys.executable, __file__, op], capture_output=True, text=True,
                               timeout=600, env={**os.environ, "PYTHONPATH": str(HERE)})
        assert child.returncode == 0, child.stderr[-3000:]
        done = json.loads(child.stdout.strip().splitlines()[-1])
    else:
        done = compile_matrix(op)
    assert done["error"] < 1e-3  # the compile matches eager
    kinds, corrupted = done["kinds"], done["corrupted"]
    name = "packed_linear" if op == "linear" else op
    events = [e for e in done["events"] if e["name"] == name]
    assert len(events) == 2, [e["name"] for e in done["events"]]  # square, then not
    assert len(corrupted) == 2 * len(kinds)
    for event in events:
        faulty = [n for n in event["offered"] if n in corrupted]
        assert sorted(corrupted[n] for n in faulty) == sorted(kinds), event["offered"]
        for bad in faulty:
            assert bad in event["rejected"], (bad, event["checks"].get(bad))
            assert event["rejected_by"][bad] == ("crash" if corrupted[bad] == "raise" else
                                                 "check")
        assert event["winner"] not in corrupted


# --- the same on a GPU: Triton templates ----------------------------------------------------

class Every(torch.nn.Module):
    """Every op's :class:`Chain` in one graph (one GPU compile carries the whole matrix)."""

    def __init__(self, ops: list[str]) -> None:
        super().__init__()
        self.chains = torch.nn.ModuleList([Chain(op) for op in ops])

    def forward(self, *inputs):
        outs, at = [], 0
        for chain in self.chains:
            count = len(chain.inputs())
            outs.append(chain(*inputs[at:at + count]))
            at += count
        return outs

    def inputs(self) -> tuple:
        return tuple(t for chain in self.chains for t in chain.inputs())


def _gpu_compile(ops: list[str], kinds: list[str]) -> tuple[float, list[dict], dict]:
    torch.manual_seed(0)
    model = Every(ops).eval().to("cuda", torch.float16)
    inputs = [t.to("cuda", torch.float16) for t in model.inputs()]
    torch._dynamo.reset()
    iso.clear_decisions()
    with torch.no_grad(), inductor_config.patch({
            "max_autotune_gemm_backends": "TRITON,ATEN", "fx_graph_cache": False,
            "test_configs.max_mm_configs": 2}), \
            inject_faults("triton_", kinds) as corrupted, iso.override(quiet=True):
        outs = torch.compile(model, mode="max-autotune-no-cudagraphs")(*inputs)
    error = max((o.float() - e.float()).abs().max().item()
                for o, e in zip(outs, model(*inputs), strict=True))
    return error, iso.decisions(), _kinds(corrupted)


@pytest.mark.gpu
def test_every_fault_kind_in_a_triton_template_is_rejected_on_a_gpu():
    """mm, addmm, bmm and linear (``x @ W.T``), square and non-square, in one compile; each
    Triton config offered once per kind (two configs per GEMM; the kinds fan out before any
    cap, so no ``max_choices`` here)."""
    error, events, corrupted = _gpu_compile(["mm", "addmm", "bmm", "linear"], KINDS)
    assert error < 5e-2  # the compile matches eager (fp16)
    assert sorted(e["name"] for e in events) == ["addmm"] * 2 + ["bmm"] * 2 + ["mm"] * 4
    for event in events:
        faulty = [n for n in event["offered"] if n in corrupted]
        assert sorted({corrupted[n] for n in faulty}) == sorted(_kinds_for(event["name"]))
        assert all(n in event["rejected"] for n in faulty), event["rejected"]
        assert event["winner"] not in corrupted


@pytest.mark.gpu
def test_square_linear_transposed_passed_on_torchs_inputs_sanity_baseline(monkeypatch):
    """The issue's GPU case: Inductor's generated ``W.T`` equals ``x.T`` for a square
    Linear, so ``x @ W.T`` is symmetric and a transposed output passes on torch's inputs."""
    monkeypatch.setitem(selector.OWN_INPUTS, "on", False)
    _error, events, corrupted = _gpu_compile(["linear"], ["transpose"])
    square = next(e for e in events if all(shape == [64, 64] for shape in e["shapes"]))
    faulty = [n for n in square["offered"] if n in corrupted]
    assert faulty and not set(faulty) & set(square["rejected"])


if __name__ == "__main__":  # the mm case, in its own process (see compile_matrix)
    torch.backends.mkldnn.enabled = False
    print(json.dumps(compile_matrix(sys.argv[1]), default=str))
