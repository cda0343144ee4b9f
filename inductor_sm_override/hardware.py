"""What lifting the gate can and cannot do on a given GPU generation.

Triton supports NVIDIA GPUs of compute capability 8.0 and later (its README; on Turing,
sm_75, its matmul no longer uses tensor cores but falls back to FMA instructions:
triton-lang/triton#5066, and "sm75 is not currently supported": #10918). On a T4 or an
RTX 20xx a forced Triton GEMM template is therefore far slower than cuBLAS, which uses
the tensor cores. The gate is still lifted when asked (verification still protects the
results), but the user is told once per GPU.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

MIN_TRITON_CAPABILITY = (8, 0)

_warned: set[str] = set()
_lock = threading.Lock()


def pre_ampere_note(name: str, major: int, minor: int) -> str | None:
    """Why Triton GEMM templates do not pay off on this GPU (None from sm_80 on)."""
    if (major, minor) >= MIN_TRITON_CAPABILITY:
        return None
    return (f"{name} is sm_{major}{minor} (compute capability {major}.{minor}): Triton supports "
            "8.0 and later only, and below that its matmul templates fall back to FMA "
            "instructions without tensor cores (triton-lang/triton#5066, #10918), far "
            "slower than cuBLAS; forcing them here costs compile time and speed")


def warn_if_pre_ampere(device: Any) -> None:
    """Warn once per CUDA GPU below compute capability 8.0 (never raises)."""
    try:
        import torch

        if device.type != "cuda" or torch.version.hip:
            return
        get_props = torch.cuda.get_device_properties
        props = getattr(get_props, "__wrapped__", get_props)(device)
        note = pre_ampere_note(props.name, props.major, props.minor)
    except Exception:
        return
    if note is None:
        return
    key = f"{device}:{props.name}"
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    warnings.warn(f"inductor_sm_override: {note}", RuntimeWarning, stacklevel=3)
