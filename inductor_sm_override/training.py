"""Training: backward GEMMs compiled under the settings of their forward; gradient checks.

AOT autograd compiles the backward graph lazily, at the first ``.backward()`` (torch
2.11 and 2.13 alike, ``_aot_autograd/graph_compile.py``), i.e. after the block that
compiled the forward has usually ended, and on 2.11/CUDA on autograd's device thread,
which does not see the block's context variables. Its GEMMs were then never autotuned,
capped or verified under the settings. ``torch._functorch.config``'s
``force_non_lazy_backward_lowering`` (both releases) makes AOT autograd compile the
backward right after the forward, inside the same compile, so inside the block: the
factory below sets it for every block (``block.BLOCK_HOOKS["functorch_config"]``).

Cost: a graph compiled with grad enabled now compiles its backward up front even if
``.backward()`` is never called (inference without ``torch.no_grad()``); a backward that
fails to lower fails the compile instead of the first ``.backward()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .settings import Settings

FUNCTORCH_CHANGES = {"force_non_lazy_backward_lowering": True}


def functorch_config(settings: Settings) -> Any:
    """Block hook: compile backward graphs eagerly (with their forward) inside the block.

    Returns ``ConfigChanges`` (applied per thread on torch >= 2.13, refcounted process-wide
    before, by block.py through compat's config adapter), or None."""
    import torch._functorch.config as config

    from .config_scope import ConfigChanges

    changes = {k: v for k, v in FUNCTORCH_CHANGES.items() if hasattr(config, k)}
    return ConfigChanges(config, changes) if changes else None


# --- gradient checks (iso.compile of a model that trains) -----------------------------------

def needs_grad(model: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
    """True when calls will build an autograd graph: grad mode on, and a parameter or an
    input tensor requires grad (the graph torch.compile compiles then has a backward)."""
    import torch

    from .outputs import tensors

    if not torch.is_grad_enabled():
        return False
    if isinstance(model, torch.nn.Module) and any(p.requires_grad for p in model.parameters()):
        return True
    return any(t.requires_grad for _p, t in tensors((tuple(args), kwargs), "input"))


def cotangents(output: Any, seed: int = 1234) -> dict[str, Any]:
    """A fixed random cotangent per floating-point output tensor that requires grad."""
    import torch

    from .outputs import tensors

    generator = torch.Generator().manual_seed(seed)
    found = {}
    for path, t in tensors(output):
        if t.requires_grad and t.is_floating_point():
            found[path] = torch.randn(t.shape, generator=generator, dtype=torch.float64)
    return found


def gradients(model: Any, output: Any, args: Any, kwargs: Any,
              cot: dict[str, Any]) -> dict[str, Any]:
    """``d(sum_i <output_i, cot_i>)`` w.r.t. the parameters (by name) and the input
    tensors that require grad (by path), without touching any ``.grad``."""
    import torch

    from .outputs import tensors

    targets: dict[str, Any] = {}
    if isinstance(model, torch.nn.Module):
        targets.update((f"grad.{name}", p) for name, p in model.named_parameters()
                       if p.requires_grad)
    targets.update((f"grad.{path}", t) for path, t in tensors((args, kwargs), "input")
                   if t.requires_grad)
    outs = dict(tensors(output))
    terms = [(outs[path] * c.to(outs[path].device, outs[path].dtype)).sum()
             for path, c in cot.items() if path in outs]
    if not terms or not targets:
        return {}
    loss = torch.stack([t.to(torch.float64) for t in terms]).sum()
    found = torch.autograd.grad(loss, list(targets.values()), allow_unused=True)
    return {name: (g if g is not None else torch.zeros_like(t))
            for (name, t), g in zip(targets.items(), found, strict=True)}
