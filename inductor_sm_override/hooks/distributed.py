"""Distributed autotuning (``TORCHINDUCTOR_DISTRIBUTED_MAX_AUTOTUNE_GEMM=1``) in verified
blocks: what one rank receives is checked on this rank, what cannot be checked stays here.

Torch (``torch/_inductor/distributed_autotune.py``, the same in 2.11, 2.13 and 2.15): while
lowering, ``kernel/mm.py``'s ``tuned_mm`` asks ``maybe_autotune_remote`` whether an ``mm``
with more than one choice is autotuned here (index % world size == rank) or on another rank
(a placeholder buffer). In the scheduler each rank benchmarks its own ops, the winners are
all-gathered, and every placeholder becomes ``autotune_select_algorithm(name, [choice], ...)``
of the received choice: a sole choice, which Inductor takes without benchmarking.

Inside a verified block:

- ``maybe_autotune_remote``: an op whose received choice could not be checked here, or
  that torch cannot distribute, is tuned here (returns None, as torch does for a sole
  choice, before torch counts it: every rank decides the same from the same op, so the
  ranks' op indices stay aligned). That is: a device other than a GPU (CPU C++ templates
  are never deferred and cannot be sent: torch alone fails there with ``incorrect local
  autotuned nodes found``), a choice torch cannot send (only ``aten_mm`` and Triton
  ``mm_template`` choices can be serialized), or no reference to check a received template
  against (references.py).
- ``_DistributedAutotuneBuffer.autotune``: the received choice's op is recorded
  "received from rank k"; as a sole template it is checked against the op's reference on
  this rank (autotune.py ``_check_sole``), and the reference replaces it if it fails.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import wrapt

from ..checks.references import VERIFIED_OPS, reference_for
from ..core import records, state
from ..core.patching import Patch

log = logging.getLogger("inductor_sm_override")

def _sendable(choice: Any) -> bool:
    """A choice torch's ``_SerializedChoice`` can send (2.11, 2.13, 2.15: ``aten_mm`` and
    Triton ``mm_template`` only)."""
    from torch._inductor import select_algorithm as sa

    if isinstance(choice, sa.ExternKernelCaller):
        return getattr(getattr(choice, "choice", None), "name", None) == "mm"
    return isinstance(choice, sa.TritonTemplateCaller)


def why_tuned_here(name: str, choices: list[Any], inputs: Any, layout: Any) -> str | None:
    """None when the received choice of this op can be checked here; else why not."""
    if name not in VERIFIED_OPS:
        return None  # not the GEMM family: torch's behaviour, unverified as any such op
    device = getattr(layout, "device", None)
    if getattr(device, "type", "cpu") not in ("cuda", "xpu"):
        return ("distributed autotuning: tuned here (on the CPU, C++ templates are never "
                "deferred and cannot be sent)")
    unsendable = [c for c in choices if not _sendable(c)]
    if unsendable:
        return (f"distributed autotuning: tuned here ({getattr(unsendable[0], 'name', '?')} "
                "cannot be sent between ranks)")
    if reference_for(name, inputs, layout) is None:
        return f"distributed autotuning: tuned here (no reference to check a received {name})"
    return None


def _maybe_autotune_remote(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    import torch._inductor.config as config

    settings = state.current()
    if settings is None or not settings.verify or not config.distributed_max_autotune_gemm:
        return wrapped(*args, **kwargs)
    try:
        call = inspect.signature(wrapped).bind(*args, **kwargs).arguments
        why = why_tuned_here(str(call["name"]), list(call["choices"]), call["inputs"],
                             call["layout"])
    except Exception:
        log.debug("distributed autotuning: could not inspect the op", exc_info=True)
        why = "distributed autotuning: tuned here (the op could not be inspected)"
    if why is None:
        return wrapped(*args, **kwargs)
    records.pend("note", why)
    return None


def _autotune_received(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """Around ``_DistributedAutotuneBuffer.autotune(ser_choice)``: mark the op's origin."""
    ser_choice = args[0] if args else kwargs.get("ser_choice")
    rank = None
    try:
        from torch._inductor.distributed_autotune import get_autotune_pg

        group = get_autotune_pg()
        if group is not None:
            rank = int(ser_choice.index) % group.size()
    except Exception:
        log.debug("distributed autotuning: sender unknown", exc_info=True)
    records.pend("origin", "received from another rank" if rank is None else
                 f"received from rank {rank}")
    return wrapped(*args, **kwargs)


def build_patches(plan: Any) -> list[Patch]:
    """The two hooks, where this torch has distributed autotuning."""
    try:
        from torch._inductor import distributed_autotune as da
    except Exception:
        return []
    patches = []
    decide = vars(da).get("maybe_autotune_remote")
    if callable(decide):
        patches.append(Patch(da, "maybe_autotune_remote",
                             wrapt.FunctionWrapper(decide, _maybe_autotune_remote)))
    buffer = getattr(da, "_DistributedAutotuneBuffer", None)
    autotune = vars(buffer).get("autotune") if buffer is not None else None
    if callable(autotune):
        patches.append(Patch(buffer, "autotune",
                             wrapt.FunctionWrapper(autotune, _autotune_received)))
    return patches
