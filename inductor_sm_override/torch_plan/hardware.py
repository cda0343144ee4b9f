"""The hardware as Inductor sees it: SM counts (simulated, limited), device facts, and what
lifting the gate can and cannot do on a given GPU generation.

Triton supports NVIDIA GPUs of compute capability 8.0 and later (its README; on Turing,
sm_75, its matmul no longer uses tensor cores but falls back to FMA instructions:
triton-lang/triton#5066, and "sm75 is not currently supported": #10918). On a T4 or an
RTX 20xx a forced Triton GEMM template is therefore far slower than cuBLAS, which uses
the tensor cores. The gate is still lifted when asked (verification still protects the
results), but the user is told once per GPU.
"""

from __future__ import annotations

import contextvars
import threading
import warnings
from typing import Any

from ..core import state

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
        props = real_properties(device)
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


def real_properties(device: Any) -> Any:
    """``torch.cuda.get_device_properties`` of the hardware, never simulated."""
    import torch

    get_props = torch.cuda.get_device_properties
    return getattr(get_props, "__wrapped__", get_props)(device)


def sm_count(plan: Any, device: Any) -> int:
    """The SM count Inductor sees for ``device`` (``simulate_sms`` included)."""
    if plan.device_properties is not None:
        return int(plan.device_properties.create(device).multi_processor_count)
    import torch

    count = torch.cuda.get_device_properties(device).multi_processor_count
    settings = state.current()
    if settings is not None and settings.simulate_sms is not None:
        count = settings.simulate_sms
    return int(count)


# (device index, SMs) of the iso.limit_sms blocks active in this thread/task, innermost last
LIMITS: contextvars.ContextVar[tuple[tuple[int, int], ...]] = contextvars.ContextVar(
    "iso_limit_sms", default=())


def limited_sms(device: int | None = None) -> int | None:
    """The SMs this thread's GPU work is limited to on ``device`` (None: any device) by the
    innermost active ``iso.limit_sms`` block, or None outside any."""
    for index, sms in reversed(LIMITS.get()):
        if device is None or index == device:
            return sms
    return None


def device_info(settings: Any, device: str | None = None) -> dict[str, Any]:
    """The device a graph is compiled for: type, name, real SM count, the simulated one and
    the one this thread's work is limited to (timings, hence winners, were taken there)."""
    info: dict[str, Any] = {"type": "cpu", "name": "cpu", "sms": None, "simulated_sms": None,
                            "limited_sms": None}
    try:
        import torch

        kind = (device or "").split(":")[0]
        if kind in ("", "cuda") and torch.cuda.is_available():
            index = int(device.split(":")[1]) if device and ":" in device else \
                torch.cuda.current_device()
            props = real_properties(index)
            info = {"type": "cuda", "name": props.name, "sms": props.multi_processor_count,
                    "simulated_sms": None, "limited_sms": limited_sms(index)}
    except Exception:
        pass
    if settings is not None and settings.simulate_sms is not None and info["type"] != "cpu":
        info["simulated_sms"] = settings.simulate_sms
    return info
