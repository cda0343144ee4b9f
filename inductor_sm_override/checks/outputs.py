"""Model outputs as named leaves: tensors inside tuples, dicts, HF ``ModelOutput``s, caches.

``torch.utils._pytree`` does not know HF cache objects (``DynamicCache`` and its layers),
and comparing such an object with ``!=`` says nothing about its tensors. :func:`flatten`
walks containers, dataclasses and plain objects (their instance attributes) and returns
``(path, leaf)`` pairs, e.g. ``("output.past_key_values.layers[0].keys", tensor)``, so two
outputs can be compared leaf by leaf and a structure mismatch can name the path.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

from .verify import Check, compare

_SCALARS = (type(None), bool, int, float, complex, str, bytes)
MAX_DEPTH = 12


@dataclasses.dataclass(frozen=True)
class TypeMark:
    """Stands for an object whose own value is not compared (only its tensors are)."""

    name: str

    def __repr__(self) -> str:
        return f"<{self.name}>"


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def flatten(value: Any, path: str = "output") -> list[tuple[str, Any]]:
    """``(path, leaf)`` pairs of ``value``: tensors, scalars and a :class:`TypeMark` per
    opaque object (whose tensor attributes follow under its path)."""
    found: list[tuple[str, Any]] = []
    _walk(value, path, found, set(), 0)
    return found


def _walk(value: Any, path: str, found: list, seen: set[int], depth: int) -> None:
    if _is_tensor(value) or isinstance(value, _SCALARS):
        found.append((path, value))
        return
    if depth > MAX_DEPTH or id(value) in seen:
        found.append((path, TypeMark(type(value).__name__)))
        return
    seen = seen | {id(value)}
    if isinstance(value, Mapping):  # dict, OrderedDict, HF ModelOutput (its non-None fields)
        named = isinstance(value, _model_output())
        for key in value:
            label = f".{key}" if named else f"[{key!r}]"
            _walk(value[key], f"{path}{label}", found, seen, depth + 1)
        return
    if isinstance(value, (list, tuple)):
        fields = getattr(value, "_fields", None)  # a namedtuple: name its fields
        for index, item in enumerate(value):
            label = f".{fields[index]}" if fields else f"[{index}]"
            _walk(item, f"{path}{label}", found, seen, depth + 1)
        return
    found.append((path, TypeMark(type(value).__name__)))
    for name, item in _attributes(value):
        _walk(item, f"{path}.{name}", found, seen, depth + 1)


def _model_output() -> tuple[type, ...]:
    try:
        from transformers.utils import ModelOutput
    except Exception:
        return ()
    return (ModelOutput,)


def _attributes(value: Any) -> list[tuple[str, Any]]:
    """The attributes of an opaque object that hold tensors (directly or inside)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = [(f.name, getattr(value, f.name, None)) for f in dataclasses.fields(value)]
    else:
        try:
            items = list(vars(value).items())
        except TypeError:  # no __dict__ (slots, C objects): nothing to walk
            return []
    return [(k, v) for k, v in items if _holds_tensor(v, 0)]


def _holds_tensor(value: Any, depth: int) -> bool:
    if _is_tensor(value):
        return True
    if depth > 3 or isinstance(value, _SCALARS):
        return False
    if isinstance(value, Mapping):
        return any(_holds_tensor(v, depth + 1) for v in list(value.values())[:64])
    if isinstance(value, (list, tuple)):
        return any(_holds_tensor(v, depth + 1) for v in list(value)[:64])
    try:
        return any(_holds_tensor(v, depth + 1) for v in list(vars(value).values())[:64])
    except TypeError:
        return False


def tensors(value: Any, path: str = "output") -> list[tuple[str, Any]]:
    """Only the tensor leaves of :func:`flatten`."""
    return [(p, leaf) for p, leaf in flatten(value, path) if _is_tensor(leaf)]


# --- mapping and cloning inputs -------------------------------------------------------------

def map_tensors(value: Any, fn: Callable[[Any], Any]) -> Any:
    """``value`` with every tensor inside tuples/lists/dicts replaced by ``fn(tensor)``;
    other objects are deep-copied with their tensors mapped (an HF cache passed in)."""
    if _is_tensor(value):
        return fn(value)
    if isinstance(value, _SCALARS):
        return value
    if type(value) is dict:
        return {k: map_tensors(v, fn) for k, v in value.items()}
    if isinstance(value, Mapping):
        return _copy_mapping(value, fn)
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(map_tensors(v, fn) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(map_tensors(v, fn) for v in value)
    try:
        memo: dict[int, Any] = {}
        for _path, leaf in tensors(value):
            memo[id(leaf)] = fn(leaf)
        return copy.deepcopy(value, memo)
    except Exception:
        return value


def _copy_mapping(value: Any, fn: Callable[[Any], Any]) -> Any:
    try:
        out = copy.copy(value)
        for key in list(value.keys()):
            out[key] = map_tensors(value[key], fn)
        return out
    except Exception:
        return {k: map_tensors(v, fn) for k, v in value.items()}


def clone_tensor(t: Any) -> Any:
    """A leaf copy with the same dtype, device, strides and ``requires_grad``."""
    out = t.detach().clone()
    return out.requires_grad_(t.requires_grad) if out.is_floating_point() or \
        out.is_complex() else out


def clone(value: Any) -> Any:
    """A copy of model inputs that the model may change in place without touching ours.

    Aliasing is kept, and what dynamo guards on: one tensor passed twice (``ids`` as input
    and as ``labels=``) gives one copy passed twice; tensors sharing storage (views of one
    another), and a tensor ``clone()`` would give other strides (a strided or expanded
    view), are copied as views of one copied storage with the same sizes, strides and
    offset; dtype, device and ``requires_grad`` are kept. So a compile made on the copy
    passes dynamo's guards on the real call and is not compiled again.
    """
    seen: dict[int, Any] = {}
    shared: dict[tuple, int] = {}
    for _path, leaf in tensors(value, "input"):
        if id(leaf) not in seen:
            seen[id(leaf)] = leaf
            key = _storage_key(leaf)
            if key is not None:
                shared[key] = shared.get(key, 0) + 1
    storages: dict[tuple, Any] = {}
    done: dict[int, Any] = {}

    def copy_one(t: Any) -> Any:
        if id(t) in done:
            return done[id(t)]
        out = clone_tensor(t)
        key = _storage_key(t)
        if key is not None and (shared.get(key, 0) > 1 or out.stride() != t.stride()):
            out = _view_copy(t, storages, key)
        done[id(t)] = out
        return out

    return map_tensors(value, copy_one)


def _storage_key(t: Any) -> tuple | None:
    """(device, storage address) of a dense tensor with storage; None otherwise."""
    try:
        storage = t.untyped_storage()
        if storage.nbytes() == 0 or storage.data_ptr() == 0:
            return None
        return (str(t.device), storage.data_ptr())
    except Exception:  # sparse, nested, some subclasses: copied one by one
        return None


def _view_copy(t: Any, storages: dict[tuple, Any], key: tuple) -> Any:
    import torch

    storage = storages.get(key)
    if storage is None:
        storage = storages[key] = t.untyped_storage().clone()
    out = torch.empty(0, dtype=t.dtype, device=t.device)
    with torch.no_grad():
        out.set_(storage, t.storage_offset(), t.size(), t.stride())
    return out.requires_grad_(t.requires_grad) if out.is_floating_point() or \
        out.is_complex() else out


def to_fp64(value: Any) -> Any:
    def wide(t: Any) -> Any:
        if not t.is_floating_point():
            return t
        return t.detach().double().requires_grad_(t.requires_grad)

    return map_tensors(value, wide)


# --- comparing ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TreeCheck:
    """The outcome of comparing two outputs leaf by leaf (the worst leaf's numbers)."""

    passed: bool
    max_abs: float | None
    max_rel: float | None
    rtol: float | None
    atol: float | None
    reason: str = ""
    path: str = ""  # the leaf that failed, or the worst one


def _structure(leaves: list[tuple[str, Any]]) -> list[tuple[str, str]]:
    return [(p, "tensor" if _is_tensor(v) else repr(v) if isinstance(v, TypeMark)
             else type(v).__name__) for p, v in leaves]


def compare_trees(actual: Any, reference: Any, eager: Any | None = None,
                  rtol: float | None = None, atol: float | None = None,
                  eager_factor: float | None = None, path: str = "output") -> TreeCheck:
    """Compare two outputs leaf by leaf.

    Tensors: :func:`verify.compare` (a leaf also passes when ``eager_factor`` is given and
    its error is within that many times eager's own error against the same reference).
    Scalars: equal (floats within the tolerance). Opaque objects: same type (their own
    value is never compared with ``!=``; their tensors are). A structure mismatch fails
    and names the first path where the two differ.
    """
    got, want = flatten(actual, path), flatten(reference, path)
    shape_got, shape_want = _structure(got), _structure(want)
    if shape_got != shape_want:
        return TreeCheck(False, None, None, None, None, _structure_reason(shape_got, shape_want))
    base = dict(tensors(eager, path)) if eager is not None else {}
    worst = TreeCheck(True, 0.0, 0.0, rtol, atol)
    for (where, a), (_, e) in zip(got, want, strict=True):
        if isinstance(a, TypeMark):
            continue
        if not _is_tensor(a):
            if not _same_scalar(a, e):
                return TreeCheck(False, None, None, rtol, atol, f"{where}: {a!r} != {e!r}",
                                 where)
            continue
        check: Check = compare(a, e, rtol, atol)
        passed, reason = check.passed, check.reason
        own = base.get(where)
        if (not passed and eager_factor is not None and own is not None
                and math.isfinite(check.max_abs)):
            mine = compare(own, e, rtol, atol)
            if math.isfinite(mine.max_abs) and mine.max_abs > 0 \
                    and check.max_abs <= eager_factor * mine.max_abs:
                passed = True
                reason = f"within {eager_factor:g}x eager's own error"
        if not passed:
            return TreeCheck(False, _finite(check.max_abs), _finite(check.max_rel), check.rtol,
                             check.atol, f"{where}: {reason}", where)
        if worst.max_abs is None or check.max_abs >= worst.max_abs:
            worst = TreeCheck(True, check.max_abs, check.max_rel, check.rtol, check.atol,
                              f"{where}: {reason}" if reason else "", where)
    return worst


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _same_scalar(a: Any, e: Any) -> bool:
    if isinstance(a, float) and isinstance(e, float):
        return math.isclose(a, e, rel_tol=1e-5, abs_tol=1e-8) or (math.isnan(a) and math.isnan(e))
    return type(a) is type(e) and a == e


def _structure_reason(got: list[tuple[str, str]], want: list[tuple[str, str]]) -> str:
    for (path_a, kind_a), (path_e, kind_e) in zip(got, want, strict=False):
        if path_a != path_e:
            return f"output structure differs: {path_a} where the reference has {path_e}"
        if kind_a != kind_e:
            return f"output structure differs at {path_a}: {kind_a} where the reference " \
                   f"has {kind_e}"
    if len(got) > len(want):
        return f"output structure differs: extra {got[len(want)][0]}"
    return f"output structure differs: {want[len(got)][0]} missing"


def identical(a: Any, b: Any) -> bool:
    """Same structure and bitwise-equal tensors (NaNs equal)."""
    import torch

    la, lb = flatten(a), flatten(b)
    if _structure(la) != _structure(lb):
        return False
    for (_, x), (_, y) in zip(la, lb, strict=True):
        if _is_tensor(x):
            if x.shape != y.shape or x.dtype != y.dtype:
                return False
            if not torch.equal(x.detach(), y.detach()):
                xf, yf = x.detach(), y.detach()
                if not (xf.is_floating_point() and
                        bool(((xf == yf) | (xf.isnan() & yf.isnan())).all())):
                    return False
        elif not isinstance(x, TypeMark) and not _same_scalar(x, y):
            return False
    return True
