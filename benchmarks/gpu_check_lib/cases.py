"""What a gpu-check run measures: the step-2 cases, the sizes of a GPU run and of a dry
run (with each part's estimate), and the models."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # the repository
MODE = "max-autotune-no-cudagraphs"
EMULATED_SMS = 46  # an RTX 4070-class part; limit_sms rounds it (48 on sm_90)
GATE_SMS = 68  # torch's own bar: "gated" is the gate saying no, as on a mid-size GPU
MODES = ["gated", "forced+verify", "cap8+verify", "fastest"]


@dataclasses.dataclass(frozen=True)
class Case:
    """One step-2 case: a GEMM (m, n, k) or a transformer block (kind, tokens, width, x)."""

    key: str
    label: str
    kind: str  # "gemm", "mlp" or "attn"
    dims: tuple[int, int, int]  # gemm: m, n, k; mlp: tokens, d, hidden; attn: tokens, d, heads
    estimate_s: dict[str, float]  # mode -> seconds (compile + timing), target device

    @property
    def is_model(self) -> bool:
        return self.kind != "gemm"


def _est(gated: float, forced: float, cap8: float, fastest: float) -> dict[str, float]:
    return dict(zip(MODES, (gated, forced, cap8, fastest), strict=True))


# H100 estimates at 48 SMs, torch 2.11 (see benchmarks/results/README.md, "gpu-check
# estimates"): the H100 notes (benchmarks/results/h100-torch2.11-notes-2026-11.md)
# measured 0.8-22 s per forced GEMM and 8-46 s per forced MLP block (M=16..4096) vs
# 0.05 s / 0.08-1.4 s gated, on the full H100; a cap of 8 of ~20 configs
# costs ~0.4x plus a second; "fastest" re-uses the gated and cap8 graphs (FX-graph-cache
# hits) and adds its A/B timing; every mode adds ~0.7 s of timing and fp64 check.
# The plan must total <= 300 s (limit 360): the skinny and prefill GEMMs and the M=2048
# attention block were dropped (cuBLAS won the large GEMMs on the H100; the M=2048 MLP block
# keeps a prefill-sized model case, the one where fusing the GELU epilogue pays).
GPU_CASES = [
    Case("decode", "decode 16x4096x4096", "gemm", (16, 4096, 4096), _est(2, 6, 3.5, 3)),
    Case("mlp256", "MLP block M=256 (4096/11008)", "mlp", (256, 4096, 11008),
         _est(3, 15, 7, 4)),
    Case("attn256", "attention block M=256 (4096, 32 heads)", "attn", (256, 4096, 32),
         _est(3, 15, 7, 4)),
    Case("mlp2048", "MLP block M=2048 (4096/11008)", "mlp", (2048, 4096, 11008),
         _est(3, 25, 11, 4)),
]
DRY_CASES = [  # the same code on the CPU: C++ GEMM template vs MKL under freezing
    Case("decode", "gemm 8x32x64", "gemm", (8, 32, 64), _est(2, 2, 2, 3)),
    Case("attn", "attention block M=8 (32, 2 heads)", "attn", (8, 32, 2), _est(3, 3, 3, 4)),
]


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What a run does at its size (GPU or dry run) and what each part should cost."""

    dtype: str
    cases: list[Case]
    startup_s: float
    pytest_s: float  # estimate
    pytest_cap_s: float  # hard cap of the pytest subprocess
    pytest_paths: tuple[str, ...]
    cost_gemm: tuple[int, int, int]
    cost_budget_s: float
    cost_estimate_s: dict[str, float]
    train_dims: tuple[int, int, int]
    train_estimate_s: dict[str, float]
    bench_rep_ms: int
    model_gemm_backends: str | None = None  # dry run: ATen only in blocks (no C++ templates)


GPU = Sizes(
    # pytest -m gpu: 22 tests (17 at 85 s; issue 27's fault matrix: one compile of 8 small
    # GEMMs x 7 kinds, a 1-GEMM baseline, 3 fused-fault compiles: ~25 s more, estimated)
    dtype="float16", cases=GPU_CASES, startup_s=15, pytest_s=108, pytest_cap_s=140,
    pytest_paths=("tests",),
    # the earlier H100 run's EXHAUSTIVE GEMM (over 320 s uncapped on the full GPU). The
    # budget now covers choice generation and max_choices caps it (generation.py): the
    # cap8 modes render 12 of EXHAUSTIVE's ~1,400 configs instead of all of them
    cost_gemm=(1024, 14336, 4096), cost_budget_s=15.0,
    cost_estimate_s={"gated": 2, "exhaustive+budget": 19, "exhaustive cap8+verify": 5,
                     "exhaustive cap8 no-verify": 5},
    train_dims=(256, 4096, 11008), train_estimate_s={"gated": 7, "cap8+verify": 22},
    bench_rep_ms=60,
)
DRY = Sizes(
    dtype="float32", cases=DRY_CASES, startup_s=6, pytest_s=10, pytest_cap_s=120,
    pytest_paths=("tests/test_gpu.py", "tests/test_limit_sms.py", "tests/test_fault_matrix.py"),
    cost_gemm=(8, 32, 64), cost_budget_s=5.0,
    cost_estimate_s={"gated": 2, "exhaustive+budget": 2, "exhaustive cap8+verify": 2,
                     "exhaustive cap8 no-verify": 2},
    train_dims=(8, 32, 64), train_estimate_s={"gated": 3, "cap8+verify": 3},
    bench_rep_ms=0, model_gemm_backends="ATEN",
)


def build_case(case: Case, device: str, dtype: Any) -> tuple[Any, tuple]:
    """(model in eval mode, inputs) for a case."""
    import torch

    torch.manual_seed(0)
    if case.kind == "gemm":
        m, n, k = case.dims
        model: Any = torch.nn.Linear(k, n, bias=False)
        x = torch.randn(m, k)
    elif case.kind == "mlp":
        tokens, d, hidden = case.dims
        model, x = MLPBlock(d, hidden), torch.randn(tokens, d)
    else:
        tokens, d, heads = case.dims
        model, x = AttentionBlock(d, heads), torch.randn(tokens, d)
    return model.to(device=device, dtype=dtype).eval(), (x.to(device=device, dtype=dtype),)


def _modules() -> tuple[type, type]:
    import torch
    import torch.nn.functional as F  # noqa: N812

    class MLPBlockImpl(torch.nn.Module):
        """Pre-norm transformer MLP: x + down(gelu(up(norm(x))))."""

        def __init__(self, d: int, hidden: int) -> None:
            super().__init__()
            self.norm = torch.nn.LayerNorm(d)
            self.up, self.down = torch.nn.Linear(d, hidden), torch.nn.Linear(hidden, d)

        def forward(self, x: Any) -> Any:
            return x + self.down(F.gelu(self.up(self.norm(x))))

    class AttentionBlockImpl(torch.nn.Module):
        """Pre-norm causal self-attention: QKV projection, SDPA on 4-D (batch, heads, seq,
        head_dim) tensors (what models pass, so flash or memory-efficient attention can
        serve it; 3-D inputs get the math path), output projection."""

        def __init__(self, d: int, heads: int) -> None:
            super().__init__()
            self.heads = heads
            self.norm = torch.nn.LayerNorm(d)
            self.qkv, self.out = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)

        def forward(self, x: Any) -> Any:
            tokens, d = x.shape
            qkv = self.qkv(self.norm(x)).view(1, tokens, 3, self.heads, d // self.heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (1, heads, tokens, head_dim)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return x + self.out(y.transpose(1, 2).reshape(tokens, d))

    return MLPBlockImpl, AttentionBlockImpl


def MLPBlock(d: int, hidden: int) -> Any:  # noqa: N802 - a class factory (torch imported late)
    return _modules()[0](d, hidden)


def AttentionBlock(d: int, heads: int) -> Any:  # noqa: N802
    return _modules()[1](d, heads)


