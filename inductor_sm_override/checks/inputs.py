"""The check's own operands: each draw refilled from its own seed, torch's layout kept.

Torch draws every autotune input under ``preserve_rng_state()``, so inputs of one shape are
equal; the selector refills each draw with :func:`reseed` (SAFETY.md, "The check's own
inputs").
"""

from __future__ import annotations

import hashlib
from typing import Any

from .outputs import _view_copy


def op_seed(*parts: Any) -> int:
    """A stable 63-bit seed from the op's identity (name, shapes, dtypes) and a draw index."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def storage_view(tensor: Any) -> Any:
    """The whole storage behind ``tensor`` as a flat tensor of its dtype (padding included)."""
    import torch

    numel = tensor.untyped_storage().nbytes() // tensor.element_size()
    flat = torch.empty(0, dtype=tensor.dtype, device=tensor.device)
    return flat.set_(tensor.untyped_storage(), 0, (numel,), (1,))


def reseed(tensor: Any, seed: int, integers: bool = True) -> Any:
    """Refill ``tensor``'s whole storage in place from a generator seeded with ``seed`` on its
    device (size, stride, offset, padding kept; the global RNG untouched): floats N(0, 1)
    (1-byte floats through float16), integers 0..7 (``integers=False``: left alone), bools."""
    import torch

    if tensor.is_mkldnn or tensor.numel() == 0:
        return tensor
    flat = storage_view(tensor)
    gen = torch.Generator(device=tensor.device).manual_seed(seed)
    with torch.no_grad():
        if flat.dtype.is_floating_point and flat.element_size() == 1:  # fp8 (fp4: raises)
            flat.copy_(torch.randn(flat.shape, dtype=torch.float16, device=flat.device,
                                   generator=gen))
        elif flat.dtype.is_floating_point or flat.dtype.is_complex:
            flat.normal_(generator=gen)
        elif integers:
            flat.random_(0, 2 if flat.dtype == torch.bool else 8, generator=gen)
    return tensor


def strided_copy(tensor: Any) -> Any:
    """A copy with the same size, stride, storage offset and whole storage (a dense clone
    would lose the padding a kernel indexes into)."""
    return _view_copy(tensor, {}, None)
