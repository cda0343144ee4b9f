"""Numerical checks: a forced kernel's output against a reference, per-dtype tolerances.

Default tolerances are (rtol, atol) where atol is relative to the reference's RMS
magnitude (so one default serves any input scale); a user-given ``atol`` is absolute.
The reasoning per dtype is in SAFETY.md.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

# dtype name -> (rtol, atol as a fraction of the reference RMS)
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-7, 1e-7),
    "float32": (1e-2, 1e-2),  # TF32 (10-bit mantissa) and split-K reorderings are allowed
    "float16": (2e-2, 2e-2),  # fp16 output rounding + different fp32 accumulation order
    "bfloat16": (4e-2, 4e-2),  # 8-bit mantissa output rounding
    "float8_e4m3fn": (0.15, 0.15),
    "float8_e5m2": (0.3, 0.3),
}
EXACT = (0.0, 0.0)  # integer outputs must match exactly


@dataclasses.dataclass(frozen=True)
class Check:
    """The outcome of one comparison."""

    passed: bool
    max_abs: float
    max_rel: float  # max abs error / reference RMS
    rtol: float
    atol: float  # the absolute tolerance actually used
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default_tolerances(dtype: Any) -> tuple[float, float]:
    name = str(dtype).replace("torch.", "")
    if name in DEFAULT_TOLERANCES:
        return DEFAULT_TOLERANCES[name]
    return EXACT if ("int" in name or name == "bool") else DEFAULT_TOLERANCES["float32"]


def compare(actual: Any, expected: Any, rtol: float | None = None,
            atol: float | None = None) -> Check:
    """Elementwise ``|actual - expected| <= atol + rtol * |expected|`` with NaN/Inf rules.

    A non-finite value where the reference is finite fails; where the reference is
    non-finite the values must be the same non-finite value.
    """
    import torch

    d_rtol, d_atol_rel = default_tolerances(actual.dtype)  # the checked kernel's precision
    rtol = d_rtol if rtol is None else rtol
    if tuple(actual.shape) != tuple(expected.shape):
        return Check(False, math.inf, math.inf, rtol, atol or 0.0,
                     f"shape {tuple(actual.shape)} != reference {tuple(expected.shape)}")
    a = actual.detach().to("cpu", torch.float64)
    e = expected.detach().to("cpu", torch.float64)
    finite = torch.isfinite(e)
    if e.numel() == 0:
        return Check(True, 0.0, 0.0, rtol, atol or 0.0)
    scale = float(e[finite].pow(2).mean().sqrt()) if bool(finite.any()) else 1.0
    scale = scale if scale > 0 and math.isfinite(scale) else 1.0
    atol_abs = d_atol_rel * scale if atol is None else atol
    bad_nonfinite = finite & ~torch.isfinite(a)
    mismatched_special = ~finite & ~((a == e) | (torch.isnan(a) & torch.isnan(e)))
    diff = torch.where(finite & torch.isfinite(a), (a - e).abs(), torch.zeros_like(a))
    max_abs = float(diff.max()) if diff.numel() else 0.0
    if bool(bad_nonfinite.any()):
        count = int(bad_nonfinite.sum())
        return Check(False, math.inf, math.inf, rtol, atol_abs,
                     f"{count} NaN/Inf values where the reference is finite")
    if bool(mismatched_special.any()):
        return Check(False, max_abs, max_abs / scale, rtol, atol_abs,
                     "non-finite reference values not reproduced")
    over = diff > atol_abs + rtol * e.abs().where(finite, torch.zeros_like(e))
    if bool(over.any()):
        return Check(False, max_abs, max_abs / scale, rtol, atol_abs,
                     f"{int(over.sum())} of {over.numel()} values off by up to {max_abs:.3g} "
                     f"(atol {atol_abs:.3g}, rtol {rtol:g})")
    return Check(True, max_abs, max_abs / scale, rtol, atol_abs)


def fp64_reference(op_name: str, inputs: list[Any]) -> Any | None:
    """A float64 (float32 where the device has no fp64) evaluation for known GEMM ops."""
    import torch

    fns = {"mm": torch.mm, "bmm": torch.bmm}
    fn = fns.get(op_name)
    if fn is None or len(inputs) != 2:
        return None
    device = inputs[0].device
    wide = torch.float32 if device.type == "mps" else torch.float64
    return fn(inputs[0].to(wide), inputs[1].to(wide))
