"""Template choice generation: capped before Inductor renders the templates, charged to the
budget.

Inductor turns each GEMM config into a ``TritonTemplateCaller`` at lowering, before any
preprocessing fn sees the op (2.11 ``choices.py:323``, ``get_template_configs``'s third
pass): EXHAUSTIVE renders ~1,400 of them per GEMM, so a cap or a budget applied only at
benchmarking cannot bound what a block costs. ``InductorChoices._finalize_template_configs``
(2.11 and 2.13; torch's documented place to change the choices "before they are converted
to ChoiceCaller objects, which is expensive on template codegen") receives them as cheap
``KernelTemplateChoice`` objects; there, inside a block, for the GEMM family on a GPU:

- with ``max_choices=N``, only the ``N + max(N, 4)`` best-ranked template configs (the
  same SM-aware model as the cap, search.py) are generated; the cap then keeps ``N`` of
  them as before;
- with ``budget_s``, at most twice what the remaining budget can benchmark (at the
  measured cost per choice) is generated, and nothing when it is spent;
- extern (ATen) choices are always kept.

The time ``get_template_configs`` takes (generation included) is charged to the block's
budget and recorded on the op (``generate_s``); the configs not generated are recorded as
dropped ("cap" or "budget").
"""

from __future__ import annotations

import inspect
import logging
import math
import time
import types
from typing import Any

import wrapt

from ..checks.references import VERIFIED_OPS
from ..core import records, state
from ..core.patching import Patch
from ..policy.search import problem_from, rank
from ..torch_plan.compat import current_plan
from ..torch_plan.hardware import sm_count

log = logging.getLogger("inductor_sm_override")

MIN_MARGIN = 4  # configs generated beyond max_choices (some fail to render)
BUDGET_FACTOR = 2.0  # generate at most this many times what the budget can benchmark
_GPU_TYPES = ("cuda", "xpu", "hip")

def generation_limit(settings: Any, has_extern: bool) -> tuple[int | None, str]:
    """How many template configs may be generated for one op, and why (None: no limit)."""
    limit, why = None, ""
    if settings.max_choices is not None:
        limit, why = settings.max_choices + max(settings.max_choices, MIN_MARGIN), "cap"
    budget = state.current_budget()
    if budget is not None:
        affordable = 0 if budget.remaining <= 0 else \
            math.ceil(BUDGET_FACTOR * budget.remaining / budget.per_choice)
        if limit is None or affordable < limit:
            limit, why = affordable, "budget"
    if limit is not None and not has_extern:
        limit = max(limit, 1)  # Inductor needs a choice
    return limit, why


def _describe(ktc: Any) -> Any:
    """A stand-in the ranking model reads (it parses ``description``)."""
    try:
        params = ktc.params.to_kwargs()
    except Exception:
        params = {}
    text = ", ".join(f"{k}={v}" for k, v in params.items())
    return types.SimpleNamespace(description=text, ktc=ktc)


def config_label(ktc: Any) -> str:
    """A readable name for a config that was never generated (no choice name exists)."""
    try:
        p = ktc.params.to_kwargs()
    except Exception:
        p = {}
    template = getattr(getattr(ktc, "template", None), "uid", None) or \
        getattr(getattr(ktc, "template", None), "name", "?")
    return (f"{template} BLOCK {p.get('BLOCK_M', '?')}x{p.get('BLOCK_N', '?')}x"
            f"{p.get('BLOCK_K', '?')} stages={p.get('num_stages', '?')} "
            f"warps={p.get('num_warps', '?')}")


def _is_extern(ktc: Any) -> bool:
    from torch._inductor.select_algorithm import ExternKernelChoice

    return isinstance(getattr(ktc, "template", None), ExternKernelChoice)


def cap_configs(ktcs: list[Any], op_name: str, kernel_inputs: Any) -> list[Any]:
    """The configs to generate for this op inside the active block (see module doc)."""
    settings = state.current()
    if settings is None or str(op_name) not in VERIFIED_OPS:
        return ktcs
    externs = [k for k in ktcs if _is_extern(k)]
    templates = [k for k in ktcs if not _is_extern(k)]
    limit, why = generation_limit(settings, bool(externs))
    if limit is None or len(templates) <= limit:
        return ktcs
    device = _device(kernel_inputs)
    if device is None or device.type not in _GPU_TYPES:
        return ktcs  # the ranking model is a GPU model; CPU ops have few templates
    problem = None
    try:
        problem = problem_from(kernel_inputs.output_layout(), kernel_inputs.nodes(),
                               _sms(device))
    except Exception:
        log.debug("no GEMM problem for the generation cap", exc_info=True)
    ranked = [shim.ktc for shim in rank([_describe(k) for k in templates], problem)]
    keep = {id(k) for k in ranked[:limit]}
    dropped = [config_label(k) for k in ranked[limit:]]
    for label in dropped:
        records.pend("dropped", (label, why))
    records.pend("note", f"choice generation: {len(dropped)} template configs not generated "
                 f"({why})")
    return [k for k in ktcs if _is_extern(k) or id(k) in keep]


def _device(kernel_inputs: Any) -> Any:
    try:
        return kernel_inputs.output_layout().device
    except Exception:
        return None


def _sms(device: Any) -> int:
    try:
        return sm_count(current_plan(), device)
    except Exception:
        return 1


def _bound(wrapped: Any, args: tuple, kwargs: dict) -> dict[str, Any]:
    try:
        return inspect.signature(wrapped).bind(*args, **kwargs).arguments
    except TypeError:
        return {}


def _finalize(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    ktcs = wrapped(*args, **kwargs)
    if state.current() is None:
        return ktcs
    bound = _bound(wrapped, args, kwargs)
    try:
        return cap_configs(list(ktcs), bound.get("op_name", ""), bound.get("kernel_inputs"))
    except Exception:  # never break a compile over the cap: generate them all
        log.debug("generation cap failed", exc_info=True)
        return ktcs


def _timed_generation(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    settings = state.current()
    if settings is None:
        return wrapped(*args, **kwargs)
    records.clear_pending()  # anything left over belonged to an op that never autotuned
    started = time.perf_counter()
    try:
        return wrapped(*args, **kwargs)
    finally:
        elapsed = time.perf_counter() - started
        if str(_bound(wrapped, args, kwargs).get("op_name", "")) in VERIFIED_OPS:
            records.pend("generate_s", elapsed)
            budget = state.current_budget()
            if budget is not None:
                budget.settle(0.0, elapsed, 0)  # generation is autotune cost too


def build_patches(plan: Any) -> list[Patch]:
    """Wrap ``InductorChoices._finalize_template_configs`` and ``get_template_configs``
    where both exist (2.11, 2.13, 2.15; older releases generate choices elsewhere)."""
    try:
        from torch._inductor.choices import InductorChoices
    except Exception:
        return []
    owned = vars(InductorChoices)
    if "_finalize_template_configs" not in owned or "get_template_configs" not in owned:
        return []
    return [
        Patch(InductorChoices, "_finalize_template_configs",
              wrapt.FunctionWrapper(owned["_finalize_template_configs"], _finalize)),
        Patch(InductorChoices, "get_template_configs",
              wrapt.FunctionWrapper(owned["get_template_configs"], _timed_generation)),
    ]
