"""The SM-gate wrapper (and the SM-count simulation) installed while an override is active.

Only the SM-count condition of ``is_big_gpu`` changes: a GPU with at least ``min_sms``
SMs passes. On ROCm torch's own rule (architecture, not SMs) is left to torch.
With ``simulate_sms`` Inductor's device properties report that many SMs.
"""

from __future__ import annotations

import logging
import threading
import warnings
from typing import Any

import wrapt

from ..core import events, state
from ..core.patching import Patch
from ..torch_plan.compat import GATE_NAME, Plan
from ..torch_plan.hardware import sm_count, warn_if_pre_ampere

log = logging.getLogger("inductor_sm_override")

TORCH_MIN_SMS = {"xpu": 16}  # torch's own threshold per device type; 68 otherwise
TORCH_DEFAULT_MIN_SMS = 68
_GPU_TYPES = ("cuda", "hip", "xpu")

_logged: set[tuple[str, int, int]] = set()


def torch_threshold(device_type: str) -> int:
    return TORCH_MIN_SMS.get(device_type, TORCH_DEFAULT_MIN_SMS)


def _device_of(args: tuple, kwargs: dict) -> Any:
    import torch

    value = args[0] if args else next(iter(kwargs.values()), 0)
    if isinstance(value, torch.device):
        return value
    if isinstance(value, str):
        return torch.device(value)
    gpu_type = "cuda"
    try:
        from torch._inductor.utils import get_gpu_type

        gpu_type = get_gpu_type()
    except Exception:
        pass
    return torch.device(gpu_type, value)


def _make_gate(plan: Plan) -> Any:
    def gate(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> bool:
        settings = state.current()
        if settings is None:
            return wrapped(*args, **kwargs)
        import torch

        if torch.version.hip or plan.missing_for(settings):
            # ROCm: torch's architecture rule (no SM check). Missing hooks: fail closed.
            return wrapped(*args, **kwargs)
        device = _device_of(args, kwargs)
        warn_if_pre_ampere(device)  # Triton has no tensor-core GEMMs below sm_80
        sms = sm_count(plan, device)
        threshold = torch_threshold(device.type)
        verdict = sms >= settings.min_sms
        _note(device, sms, settings.min_sms, threshold, verdict, settings)
        return verdict

    return gate


def _note(device: Any, sms: int, min_sms: int, threshold: int, verdict: bool,
          settings: Any) -> None:
    events.publish(settings, {"event": "gate", "device": str(device), "sms": sms,
                              "threshold": min_sms, "torch_threshold": threshold,
                              "torch_answer": sms >= threshold, "answer": verdict})
    key = (str(device), sms, min_sms)
    if key in _logged:
        return
    _logged.add(key)
    if verdict and sms < threshold:
        log.info(
            "inductor_sm_override: SM gate overridden for %s (%d SMs, threshold %d instead of %d)",
            device, sms, min_sms, threshold,
        )
    elif not verdict:
        log.warning(
            "inductor_sm_override: %s has %d SMs, below min_sms=%d: max_autotune_gemm stays off",
            device, sms, min_sms,
        )


def _simulated_properties(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    props = wrapped(*args, **kwargs)
    settings = state.current()
    if settings is None or settings.simulate_sms is None:
        return props
    if getattr(props, "type", None) not in _GPU_TYPES:
        return props
    return props._replace(multi_processor_count=settings.simulate_sms)


def _simulated_max_sms(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> int:
    settings = state.current()
    if settings is not None and settings.simulate_sms is not None:
        return settings.simulate_sms
    return wrapped(*args, **kwargs)


def _simulated_cuda_properties(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """``torch.cuda.get_device_properties`` for Inductor's direct reads of
    ``multi_processor_count`` (flex decoding, 2.13 lowering and replace_random)."""
    props = wrapped(*args, **kwargs)
    settings = state.current()
    if settings is None or settings.simulate_sms is None:
        return props
    return _SimulatedProperties(props, settings.simulate_sms)


class _SimulatedProperties(wrapt.ObjectProxy):
    """Device properties with another SM count (every other field is the real one)."""

    def __init__(self, props: Any, sms: int) -> None:
        super().__init__(props)
        self._self_sms = sms

    @property
    def multi_processor_count(self) -> int:
        return self._self_sms


def build_patches(plan: Plan) -> list[Patch]:
    """The patches for ``plan``: the gate at every binding site, and the SM simulation."""
    import torch

    patches = []
    cuda_props = vars(torch.cuda).get("get_device_properties")
    if plan.device_properties is not None and cuda_props is not None:
        wrapper = wrapt.FunctionWrapper(cuda_props, _simulated_cuda_properties)
        patches.append(Patch(torch.cuda, "get_device_properties", wrapper))
    wrappers: dict[int, Any] = {}
    for site in plan.sites:
        # wrap what is there now: a function another library put in place after the plan
        # was read (the toolkit not holding the gate then) keeps answering outside blocks
        present = vars(site).get(GATE_NAME, plan.gate)
        if not callable(present):
            present = plan.gate
        if id(present) not in wrappers:
            wrappers[id(present)] = wrapt.FunctionWrapper(present, _make_gate(plan))
        patches.append(Patch(site, GATE_NAME, wrappers[id(present)]))
    if plan.device_properties is not None:
        raw = vars(plan.device_properties)["create"]
        wrapper = wrapt.FunctionWrapper(raw, _simulated_properties)
        patches.append(Patch(plan.device_properties, "create", wrapper))
    if plan.max_sms_owner is not None:
        original = vars(plan.max_sms_owner)["get_max_num_sms"]
        wrapper = wrapt.FunctionWrapper(original, _simulated_max_sms)
        patches.append(Patch(plan.max_sms_owner, "get_max_num_sms", wrapper))
    return patches


def _cache_clear(obj: Any) -> None:
    obj = getattr(obj, "__func__", obj)  # classmethod -> function
    clear = getattr(obj, "cache_clear", None)
    if callable(clear):
        clear()


def clear_caches(plan: Plan) -> None:
    """Clear every functools cache holding a gate answer or an SM count (both edges)."""
    if plan.gate is not None:
        _cache_clear(plan.gate)
    for site in plan.sites:  # another library's gate (an lru_cache'd function) too
        present = vars(site).get(GATE_NAME)
        if present is not None and present is not plan.gate:
            _cache_clear(present)
    if plan.device_properties is not None:
        _cache_clear(vars(plan.device_properties)["create"])
    if plan.max_sms_owner is not None:
        _cache_clear(vars(plan.max_sms_owner)["get_max_num_sms"])
    _logged.clear()


# --- a gate replaced by another library while the toolkit holds it -------------------------

_replaced: dict[str, str] = {}  # site -> "module.qualname" of the function put there
_replaced_lock = threading.Lock()
_warned_replacements: set[int] = set()


def _describe(function: Any) -> str:
    module = getattr(function, "__module__", None) or "?"
    name = getattr(function, "__qualname__", None) or getattr(function, "__name__", None)
    return f"{module}.{name}" if name else module


def adopt_replacements(plan: Plan, patches: Any) -> dict[str, str]:
    """Notice a gate that another library replaced while the toolkit holds it (Unsloth
    assigns ``torch._inductor.utils.is_big_gpu`` its own 80-SM function at import): wrap
    the newcomer like torch's gate (the toolkit's rule inside override settings, the
    newcomer's answer outside), warn once naming its module, and leave the newcomer in place
    when the toolkit lets go. Called at every compile entry (and by ``status()``); returns
    the replacements seen so far (site -> function)."""
    for site in plan.sites:
        newcomer = patches.adopt(site, GATE_NAME,
                                 lambda present: wrapt.FunctionWrapper(present, _make_gate(plan)))
        if newcomer is None:
            continue
        _cache_clear(newcomer)
        where, who = f"{site.__name__}.{GATE_NAME}", _describe(newcomer)
        with _replaced_lock:
            _replaced[where] = who
            first = id(newcomer) not in _warned_replacements
            _warned_replacements.add(id(newcomer))
        if first:
            warnings.warn(
                f"inductor_sm_override: {where} was replaced by {who} (module "
                f"{getattr(newcomer, '__module__', '?')}) while the override held it; the "
                "override now wraps that function (it still answers outside override "
                "settings) and leaves it in place when the override ends",
                RuntimeWarning, stacklevel=2)
    with _replaced_lock:
        return dict(_replaced)


def replacements() -> dict[str, str]:
    """Gate replacements noticed in this process: site -> the function put there."""
    with _replaced_lock:
        return dict(_replaced)
