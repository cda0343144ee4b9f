"""``iso.compile``: compile eagerly under the override, check against eager, fall back.

Stages, each checked on the example inputs against a reference (fp64 where the model
allows, else eager): ``override`` -> ``plain`` torch.compile -> ``eager``. The returned
callable keeps the stage that passed in ``.used`` and every check in ``.checks``; later
calls enter the same settings (cheap: the patches stay installed while it lives), so
recompiles for new shapes go through the same override and verification.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import statistics
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from .block import PATCHES, activate, deactivate
from .settings import Settings
from .verify import compare

EAGER_ERROR_FACTOR = 4.0  # a compiled output may be this many times eager's own error
FP64_MAX_PARAMS = 200_000_000
NOISE = 0.02  # prefer="fastest": the override must be this much faster than plain


@dataclasses.dataclass
class StageCheck:
    stage: str
    passed: bool
    max_abs: float | None = None
    max_rel: float | None = None
    rtol: float | None = None
    atol: float | None = None
    reference: str = ""
    reason: str = ""
    seconds: float | None = None  # compile + first run
    time_ms: float | None = None  # steady-state run time (prefer="fastest")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _map_tensors(value: Any, fn: Callable[[Any], Any]) -> Any:
    import torch
    from torch.utils._pytree import tree_map

    return tree_map(lambda v: fn(v) if isinstance(v, torch.Tensor) else v, value)


def _leaves(value: Any) -> list[Any]:
    from torch.utils._pytree import tree_leaves

    return tree_leaves(value)


def _to_fp64(value: Any) -> Any:
    return _map_tensors(value, lambda t: t.double() if t.is_floating_point() else t)


def fp64_reference(model: Any, inputs: Sequence[Any]) -> Any | None:
    """The model evaluated in float64 (a copy), or None where that is not possible."""
    import torch

    try:
        if isinstance(model, torch.nn.Module):
            if sum(p.numel() for p in model.parameters()) > FP64_MAX_PARAMS:
                return None
            devices = {p.device.type for p in model.parameters()}
            if "mps" in devices:
                return None
            wide = copy.deepcopy(model).double()
        else:
            wide = model
        with torch.no_grad():
            return wide(*_to_fp64(tuple(inputs)))
    except Exception:
        return None


def check_outputs(actual: Any, reference: Any, eager: Any | None, rtol: float | None,
                  atol: float | None) -> tuple[bool, float, float, float, float, str]:
    """Compare output pytrees. Passes within tolerance, or within EAGER_ERROR_FACTOR x
    eager's own error against the same reference."""
    got, want = _leaves(actual), _leaves(reference)
    base = _leaves(eager) if eager is not None else [None] * len(want)
    if len(got) != len(want):
        return False, math.inf, math.inf, 0.0, 0.0, "output structure differs"
    worst = (True, 0.0, 0.0, 0.0, 0.0, "")
    for a, e, b in zip(got, want, base, strict=True):
        if not hasattr(e, "dtype"):
            if a != e:
                return False, math.inf, math.inf, 0.0, 0.0, f"non-tensor output {a!r} != {e!r}"
            continue
        ref = e
        check = compare(a, ref, rtol, atol)
        passed, reason = check.passed, check.reason
        if not passed and b is not None and math.isfinite(check.max_abs):
            own = compare(b, ref, rtol, atol)
            if math.isfinite(own.max_abs) and check.max_abs <= EAGER_ERROR_FACTOR * own.max_abs:
                passed, reason = True, f"within {EAGER_ERROR_FACTOR:g}x eager's own error"
        if not passed:
            return False, check.max_abs, check.max_rel, check.rtol, check.atol, reason
        if check.max_abs >= worst[1]:
            worst = (True, check.max_abs, check.max_rel, check.rtol, check.atol, reason)
    return worst


def median_time_ms(fn: Callable[[], Any], repeat: int = 20, warmup: int = 3) -> float:
    """Median wall time of ``fn`` in ms (CUDA-synchronised when a GPU is in use)."""
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


class CheckedCompiled:
    """The callable returned by :func:`compile`; ``.used`` and ``.checks`` say what and why."""

    def __init__(self, model: Any, settings: dict[str, Any]) -> None:
        self.model = model
        self.settings = settings
        self.used: str = "eager"
        self.checks: list[StageCheck] = []
        self._compiled: dict[str, Any] = {}
        self._lease = False

    def _hold_patches(self) -> None:
        if not self._lease:
            PATCHES.acquire()
            self._lease = True
            weakref.finalize(self, PATCHES.release)

    def release(self) -> None:
        """Let the patches go now (they also go when this object is garbage-collected)."""
        if self._lease:
            self._lease = False
            PATCHES.release()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.used == "eager":
            return self.model(*args, **kwargs)
        compiled = self._compiled[self.used]
        if self.used != "override":
            return compiled(*args, **kwargs)
        activation = activate(self.settings)
        try:
            return compiled(*args, **kwargs)
        finally:
            deactivate(activation)

    def __repr__(self) -> str:
        return f"<iso.compile of {type(self.model).__name__}: used={self.used!r}>"


def compile(
    model: Any,
    example_inputs: Sequence[Any] = (),
    *,
    mode: str = "max-autotune-no-cudagraphs",
    reference: str = "auto",
    prefer: str = "override",
    compile_kwargs: dict[str, Any] | None = None,
    **settings: Any,
) -> CheckedCompiled:
    """Compile ``model`` under the override now, check it, and fall back if it is wrong.

    ``reference``: "auto" (fp64 where the model allows, else eager), "fp64" or "eager".
    ``prefer``: "override" keeps the first stage that passes; "fastest" also compiles the
    plain path and keeps the faster of the two that pass (timed on the example inputs).
    Other keyword arguments are override settings (min_sms, max_choices, verify, ...).
    """
    import torch

    if reference not in ("auto", "fp64", "eager"):
        raise ValueError(f"reference={reference!r}: expected 'auto', 'fp64' or 'eager'")
    if prefer not in ("override", "fastest"):
        raise ValueError(f"prefer={prefer!r}: expected 'override' or 'fastest'")
    layer = Settings.validate_layer(**settings)
    Settings().merged(layer)
    inputs = tuple(example_inputs)
    result = CheckedCompiled(model, layer)
    with torch.no_grad():
        eager = model(*inputs)
    ref, ref_name = eager, "eager"
    if reference in ("auto", "fp64"):
        wide = fp64_reference(model, inputs)
        if wide is not None:
            ref, ref_name = wide, "fp64"
        elif reference == "fp64":
            result.checks.append(StageCheck("reference", False, reason="fp64 not possible"))
    eager_for_factor = eager if ref_name == "fp64" else None
    tol = Settings().merged(layer)
    candidates: list[StageCheck] = []
    for stage in ("override", "plain"):
        check = _try_stage(result, stage, inputs, ref, ref_name, eager_for_factor, tol,
                           mode, compile_kwargs or {})
        result.checks.append(check)
        if check.passed:
            candidates.append(check)
            if prefer == "override":
                break
    if prefer == "fastest" and len(candidates) > 1:
        for check in candidates:
            check.time_ms = median_time_ms(lambda s=check.stage: _run_stage(result, s, inputs))
        forced, plain = candidates
        # noise-aware: the override must beat plain by more than NOISE to be kept
        result.used = "override" if forced.time_ms < (1 - NOISE) * plain.time_ms else "plain"
    elif candidates:
        result.used = candidates[0].stage
    else:
        result.used = "eager"
        own = check_outputs(eager, ref, None, tol.rtol, tol.atol)
        result.checks.append(StageCheck("eager", True, own[1], own[2], own[3], own[4],
                                        ref_name, "fallback: no compiled stage passed"))
    if result.used == "override":
        result._hold_patches()
    else:
        from .report import emit

        failed = next((c for c in result.checks if c.stage == "override"), None)
        emit(tol, {"event": "fallback", "used": result.used,
                   "reason": failed.reason if failed else "",
                   "checks": [c.as_dict() for c in result.checks]})
    return result


def _run_stage(result: CheckedCompiled, stage: str, inputs: tuple) -> Any:
    import torch

    compiled = result._compiled[stage]
    with torch.no_grad():
        if stage != "override":
            return compiled(*inputs)
        activation = activate(result.settings)
        try:
            return compiled(*inputs)
        finally:
            deactivate(activation)


def _try_stage(result: CheckedCompiled, stage: str, inputs: tuple, ref: Any, ref_name: str,
               eager: Any, tol: Settings, mode: str, compile_kwargs: dict) -> StageCheck:
    import torch

    started = time.perf_counter()
    try:
        result._compiled[stage] = torch.compile(result.model, mode=mode, **compile_kwargs)
        out = _run_stage(result, stage, inputs)
    except Exception as exc:
        result._compiled.pop(stage, None)
        return StageCheck(stage, False, reference=ref_name,
                          reason=f"{type(exc).__name__}: {exc}"[:300],
                          seconds=time.perf_counter() - started)
    seconds = time.perf_counter() - started
    passed, max_abs, max_rel, rtol, atol, reason = check_outputs(out, ref, eager, tol.rtol,
                                                                 tol.atol)
    return StageCheck(stage, passed, max_abs, max_rel, rtol, atol, ref_name, reason, seconds)
