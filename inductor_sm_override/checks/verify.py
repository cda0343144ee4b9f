"""Numerical checks: a forced kernel's output against a reference, per-dtype tolerances.

Default tolerances are (rtol, atol) where atol is relative to the reference's RMS
magnitude (so one default serves any input scale), scaled with sqrt(K) for 16- and 8-bit
floats; a user-given ``atol`` is absolute. The reasoning per dtype is in SAFETY.md.
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
K_NOMINAL = 1024  # the reduction length up to which the table's atol holds
SCALED_WITH_K = frozenset({"float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"})


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


def default_tolerances(dtype: Any, k: int | None = None) -> tuple[float, float]:
    """(rtol, atol as a fraction of the reference RMS) for an output dtype and reduction
    length ``k`` (None: unknown, no scaling)."""
    name = str(dtype).replace("torch.", "")
    if name not in DEFAULT_TOLERANCES:
        return EXACT if ("int" in name or name == "bool") else DEFAULT_TOLERANCES["float32"]
    rtol, atol = DEFAULT_TOLERANCES[name]
    if k and k > K_NOMINAL and name in SCALED_WITH_K:
        atol *= math.sqrt(k / K_NOMINAL)
    return rtol, atol


def reduction_length(op_name: str, shapes: Any) -> int | None:
    """K of a GEMM from its input shapes in the selector's order; None where unknown."""
    try:
        if op_name == "convolution":  # weight (C_out, C_in / groups, *kernel)
            return math.prod(int(s) for s in shapes[1][1:])
        return int(shapes[1 if op_name in ("addmm", "baddbmm") else 0][-1])
    except (IndexError, TypeError, ValueError):
        return None


def compare(actual: Any, expected: Any, rtol: float | None = None, atol: float | None = None,
            k: int | None = None, slack: Any = None) -> Check:
    """Elementwise ``|actual - expected| <= atol + rtol * |expected| (+ slack)`` with NaN/Inf
    rules; ``k``: the reduction length (default atol scaled with it); ``slack``: an extra
    elementwise allowance (the fused check's band), NaN counting as none.

    A non-finite value where the reference is finite fails; where the reference is
    non-finite the values must be the same non-finite value. Computed where the tensors
    are (on the GPU for GPU outputs), reduced to a few scalars read back at once: float32
    arithmetic (float64 for float64 outputs), exact for integer outputs.
    """
    import torch

    d_rtol, d_atol_rel = default_tolerances(actual.dtype, k)  # the checked kernel's precision
    rtol = d_rtol if rtol is None else rtol
    if tuple(actual.shape) != tuple(expected.shape):
        return Check(False, math.inf, math.inf, rtol, atol or 0.0,
                     f"shape {tuple(actual.shape)} != reference {tuple(expected.shape)}")
    if expected.numel() == 0:
        return Check(True, 0.0, 0.0, rtol, atol or 0.0)
    exact = not (actual.dtype.is_floating_point or actual.dtype.is_complex)
    wide = _wide_dtype(actual, expected)
    e = expected.detach().to(dtype=wide)
    a = actual.detach().to(device=e.device, dtype=wide)
    finite = torch.isfinite(e)
    a_finite = torch.isfinite(a)
    zero = torch.zeros((), dtype=wide, device=e.device)
    count = finite.sum()
    scale = torch.where(finite, e * e, zero).sum().div(count.clamp(min=1)).sqrt()
    scale = torch.where(torch.isfinite(scale) & (scale > 0), scale, torch.ones_like(scale))
    atol_t = scale * d_atol_rel if atol is None else torch.full_like(scale, atol)
    if exact:
        atol_t = torch.zeros_like(scale) if atol is None else atol_t
    diff = torch.where(finite & a_finite, (a - e).abs(), zero)
    allowed = atol_t + rtol * torch.where(finite, e.abs(), zero)
    if slack is not None:
        allowed = allowed + torch.nan_to_num(slack.to(device=e.device, dtype=wide), nan=0.0)
    over = diff > allowed
    special = ~finite & ~((a == e) | (torch.isnan(a) & torch.isnan(e)))
    stats = torch.stack([
        diff.max().to(torch.float64), scale.to(torch.float64), atol_t.to(torch.float64),
        (finite & ~a_finite).sum().to(torch.float64), special.sum().to(torch.float64),
        over.sum().to(torch.float64),
    ]).tolist()  # the one device -> host transfer
    max_abs, scale_v, atol_abs, bad_nonfinite, bad_special, n_over = stats
    if bad_nonfinite:
        return Check(False, math.inf, math.inf, rtol, atol_abs,
                     f"{int(bad_nonfinite)} NaN/Inf values where the reference is finite")
    if bad_special:
        return Check(False, max_abs, max_abs / scale_v, rtol, atol_abs,
                     "non-finite reference values not reproduced")
    if n_over:
        return Check(False, max_abs, max_abs / scale_v, rtol, atol_abs,
                     f"{int(n_over)} of {over.numel()} values off by up to {max_abs:.3g} "
                     f"(atol {atol_abs:.3g}, rtol {rtol:g})")
    return Check(True, max_abs, max_abs / scale_v, rtol, atol_abs)


def _wide_dtype(actual: Any, expected: Any) -> Any:
    """float32 for the comparison, float64 where an fp64 tolerance or exact integers need
    it (float32 on MPS, which has no float64)."""
    import torch

    mps = "mps" in (actual.device.type, expected.device.type)
    needs64 = torch.float64 in (actual.dtype, expected.dtype) or not (
        actual.dtype.is_floating_point or actual.dtype.is_complex)
    return torch.float64 if needs64 and not mps else torch.float32


def fp64_reference(op_name: str, inputs: list[Any]) -> Any | None:
    """A float64 (float32 where the device has no fp64) evaluation for GEMMs whose inputs
    say everything: mm, bmm, int_mm (exact in float64), mm_plus_mm. ``inputs`` are the
    extern benchmark tensors (with their storage offsets)."""
    import torch

    fns = {"mm": (2, torch.mm), "bmm": (2, torch.bmm), "int_mm": (2, torch.mm),
           "mm_plus_mm": (4, None)}
    arity, fn = fns.get(op_name, (0, None))
    if not arity or len(inputs) != arity:
        return None
    device = inputs[0].device
    wide = torch.float32 if device.type == "mps" else torch.float64
    args = [t.to(wide) for t in inputs]
    if op_name == "mm_plus_mm":
        return args[0] @ args[1] + args[2] @ args[3]
    return fn(args[0], args[1])
