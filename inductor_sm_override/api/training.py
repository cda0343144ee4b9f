"""Training: backward GEMMs compiled under the settings of their forward; gradient checks.

AOT autograd compiles a backward graph lazily, at the first ``.backward()`` (torch 2.8 to
2.15, ``_aot_autograd/graph_compile.py``; 2.11/CUDA on autograd's device thread, which does
not see the caller's context variables), i.e. usually after the block that compiled the
forward has ended. Two things keep it under the forward's settings (compile_scope.py):

- every graph of a compile goes through the ``inner_compile`` the compile entry bound to
  those settings, so a lazy backward applies them again, in whichever thread compiles it;
- where torch has ``torch._functorch.config.force_non_lazy_backward_lowering`` (2.11, 2.13,
  2.15; not 2.8/2.9: ``compat.Plan.backward_changes``), each compile under override
  settings sets it, so the backward is compiled with its forward, at a predictable time
  (inside the block, inside ``iso.compile``'s check).

Cost of the latter: a graph compiled with grad enabled compiles its backward up front even
if ``.backward()`` is never called (inference without ``torch.no_grad()``); a backward that
fails to lower fails the compile instead of the first ``.backward()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..checks.outputs import tensors

# --- gradient checks (iso.compile of a model that trains) -----------------------------------

def needs_grad(model: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
    """True when calls will build an autograd graph: grad mode on, and a parameter or an
    input tensor requires grad (the graph torch.compile compiles then has a backward)."""
    import torch

    if not torch.is_grad_enabled():
        return False
    if isinstance(model, torch.nn.Module) and any(p.requires_grad for p in model.parameters()):
        return True
    return any(t.requires_grad for _p, t in tensors((tuple(args), kwargs), "input"))


def cotangents(output: Any, seed: int = 1234) -> dict[str, Any]:
    """A fixed random cotangent per floating-point output tensor that requires grad."""
    import torch

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
