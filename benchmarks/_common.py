"""Shared by the benchmarks: machine facts, a small model, result files."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("results")


def machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "date": _dt.date.today().isoformat(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:
        info["triton"] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["device"] = f"{props.name} ({props.multi_processor_count} SMs)"
    else:
        info["device"] = f"CPU only ({info['cpu_count']} cores)"
    return info


def mlp(width: int, depth: int, device: str, dtype: Any) -> Any:
    """A plain-torch MLP of ``depth`` GEMMs (no torchvision)."""
    import torch

    layers: list[Any] = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.GELU()]
    return torch.nn.Sequential(*layers).to(device=device, dtype=dtype).eval()


def median_ms(fn: Any, repeat: int = 100) -> float:
    """Median synchronised wall time of ``fn`` in ms (the same timer iso.compile uses)."""
    from inductor_sm_override.api.checked import median_time_ms

    return median_time_ms(fn, repeat=repeat)


def mlp_setup(device_arg: str | None, smoke: bool) -> tuple[Any, Any, str, Any, dict]:
    """(model, input, device, dtype, shape info) for the compile-time benchmarks."""
    import torch

    device = device_arg or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device == "cuda" else torch.float32
    width, depth, batch = (64, 2, 16) if smoke else (512, 6, 64)
    torch.manual_seed(0)
    model = mlp(width, depth, device, dtype)
    x = torch.randn(batch, width, device=device, dtype=dtype)
    return model, x, device, dtype, {"width": width, "depth": depth, "batch": batch,
                                     "dtype": str(dtype)}


def write_result(stem: str, payload: dict[str, Any]) -> Path:
    """benchmarks/results/<stem>-<device>-torch<ver>-<date>.json"""
    info = payload["machine"]
    device = "cpu" if info["device"].startswith("CPU") else info["device"].split(" (")[0]
    name = f"{stem}-{device}-torch{info['torch'].split('+')[0]}-{info['date']}.json"
    path = RESULTS / name.replace(" ", "_")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path
