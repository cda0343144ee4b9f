"""The check's own operands: independent draws, seeded per op, with torch's real layout.

Inductor draws every autotune input under ``preserve_rng_state()`` (``generate_example_value``),
so two inputs of one shape hold the same values and a kernel that swaps them, or writes its
output transposed where the reference is symmetric, passes a check on them. The selector
(hooks/selector.py) refills each of those draws with :func:`reseed`: the same tensor (size,
stride, storage offset, allocation and padding as torch made them, on the op's device),
values from a generator seeded by :func:`op_seed`. Real tensors that ``input_gen_fns`` hand
in (CPU frozen weights) are never drawn, so never touched.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .outputs import _view_copy

INT_HIGH = 8  # integer draws are 0..7: valid zero points, int8/uint8 operands, packed weights


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
    """Refill ``tensor``'s storage in place from a generator seeded with ``seed`` on its device:
    floats N(0, 1) (1-byte floats through float16, as torch's ``rand_strided``), integers 0..7,
    bools 0/1 (``integers=False`` leaves integer tensors alone). The global RNG is untouched."""
    import torch

    if tensor.is_mkldnn or tensor.numel() == 0:
        return tensor
    flat = storage_view(tensor)
    gen = torch.Generator(device=tensor.device).manual_seed(seed)
    with torch.no_grad():
        if str(flat.dtype) == "torch.float4_e2m1fn_x2":
            flat.view(torch.uint8).random_(0, 256, generator=gen)
        elif flat.dtype.is_floating_point and flat.element_size() == 1:
            flat.copy_(torch.randn(flat.shape, dtype=torch.float16, device=flat.device,
                                   generator=gen))
        elif flat.dtype.is_floating_point or flat.dtype.is_complex:
            flat.normal_(generator=gen)
        elif integers:
            flat.random_(0, 2 if flat.dtype == torch.bool else INT_HIGH, generator=gen)
    return tensor


def strided_copy(tensor: Any) -> Any:
    """A copy with the same size, stride, storage offset and storage (never a dense clone,
    which would lose the padding a kernel indexes into)."""
    return _view_copy(tensor, {}, None)
