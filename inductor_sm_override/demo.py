"""A small real demo: compile a model under the override and say what happened."""

from __future__ import annotations

import time
from typing import Any


def demo_model(features: int = 64) -> Any:
    """A plain-torch MLP (no torchvision): two GEMMs and an activation."""
    import torch

    return torch.nn.Sequential(
        torch.nn.Linear(features, 2 * features),
        torch.nn.GELU(),
        torch.nn.Linear(2 * features, features),
    )


def run_demo(device: str = "cpu", **settings: Any) -> dict[str, Any]:
    """Compile the demo model with ``mode="max-autotune-no-cudagraphs"`` inside an override.

    On CPU Inductor's freezing path is switched on (for the block only) so that its
    C++ GEMM template really competes with MKL, which is what autotuning needs there.
    Settings given as None are left out.
    """
    import torch
    import torch._inductor.config as inductor_config

    from .block import override
    from .gate import _gate_listeners

    settings = {k: v for k, v in settings.items() if v is not None}
    torch.manual_seed(0)
    dtype = torch.float16 if device == "cuda" else torch.float32
    model = demo_model().to(device=device, dtype=dtype).eval()
    x = torch.randn(32, 64, device=device, dtype=dtype)
    gates: list[dict[str, Any]] = []
    _gate_listeners.append(gates.append)
    torch._dynamo.reset()
    started = time.perf_counter()
    try:
        with torch.no_grad(), inductor_config.patch(freezing=True), override(**settings):
            compiled = torch.compile(model, mode="max-autotune-no-cudagraphs")
            out = compiled(x)
    finally:
        _gate_listeners.remove(gates.append)
    seconds = time.perf_counter() - started
    with torch.no_grad():
        expected = model(x)
    return {
        "device": device,
        "compile_s": round(seconds, 2),
        "max_abs_err": float((out - expected).abs().max()),
        "gate": gates[-1] if gates else None,
    }
