"""Helpers for tests and for users checking the toolkit without the hardware.

``fake_cuda_device`` makes torch (and Inductor, which reads device properties through
the dynamo device interface) see a CUDA GPU with a chosen SM count, on a CPU-only
machine. Only for inspecting decisions (gate, heuristics): nothing can run on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import wrapt

from .checks.inputs import storage_view, strided_copy
from .core.patching import _remove
from .hooks import selector
from .torch_plan.compat import has_preprocessing_hook, is_reference, selector_cache


@dataclasses.dataclass(frozen=True)
class FakeDeviceProperties:
    """The fields of ``torch.cuda.get_device_properties`` that Inductor reads."""

    name: str = "Fake mid-size GPU"
    multi_processor_count: int = 46
    major: int = 8
    minor: int = 9
    total_memory: int = 12 * 1024**3
    regs_per_multiprocessor: int = 65536
    max_threads_per_multi_processor: int = 1536
    max_threads_per_block: int = 1024
    warp_size: int = 32
    shared_memory_per_block_optin: int = 101376  # sm_86/sm_89: 99 KB
    gcnArchName: str = "NVIDIA"  # noqa: N815 - torch's attribute name


@contextlib.contextmanager
def fake_cuda_device(sms: int = 46, *, major: int = 8, minor: int = 9, count: int = 1,
                     name: str | None = None) -> Iterator[FakeDeviceProperties]:
    """Make ``count`` fake CUDA GPUs with ``sms`` SMs visible to torch and Inductor.

    Patches ``torch.cuda.get_device_properties``/``get_device_capability``/
    ``device_count``/``is_available`` and the dynamo CUDA device interface, and clears
    Inductor's cached device properties on entry and exit.
    """
    import torch
    from torch._dynamo import device_interface as di

    props = FakeDeviceProperties(
        name=name or f"Fake GPU ({sms} SMs)", multi_processor_count=sms, major=major,
        minor=minor,
    )

    def get_props(device: Any = None) -> FakeDeviceProperties:
        return props

    def capability(device: Any = None) -> tuple[int, int]:
        return (major, minor)

    patches = [
        (torch.cuda, "get_device_properties", get_props),
        (torch.cuda, "get_device_capability", capability),
        (torch.cuda, "device_count", lambda: count),
        (torch.cuda, "is_available", lambda: True),
        (torch.cuda, "current_device", lambda: 0),
        (di.CudaInterface, "get_device_properties", staticmethod(get_props)),
        (di.CudaInterface, "get_compute_capability",
         staticmethod(lambda d=None: major * 10 + minor)),
        (di.CudaInterface.Worker, "get_device_properties", staticmethod(get_props)),
    ]
    saved = [(target, attr, vars(target)[attr]) for target, attr, _ in patches]
    for target, attr, new in patches:
        setattr(target, attr, new)
    _clear_device_caches()
    try:
        yield props
    finally:
        for target, attr, old in reversed(saved):
            setattr(target, attr, old)
        _clear_device_caches()


def _clear_device_caches() -> None:
    from torch._dynamo import device_interface as di
    from torch._inductor import utils
    from torch._inductor.runtime.hints import DeviceProperties

    di.caching_worker_device_properties.clear()
    for cached in (vars(DeviceProperties)["create"], vars(utils)["is_big_gpu"],
                   vars(utils).get("get_max_num_sms")):
        func = getattr(cached, "__func__", cached)
        clear = getattr(func, "cache_clear", None)
        if callable(clear):
            clear()


# --- fault injection -----------------------------------------------------------------------

# wrong values, NaN, raise, operands' data exchanged, output transposed, the last K block
# (32, at most K / 4) dropped, the bias ignored, only the claim (docs/api.md)
FAULT_KINDS = ("wrong", "nan", "raise", "swap", "transpose", "k_tail", "epilogue", "none")
FAULT_MODES = FAULT_KINDS  # the former name
# (A, B, bias) positions among the selector's inputs, where they differ from (0, 1, None)
OPERANDS = {"addmm": (1, 2, 0), "baddbmm": (1, 2, 0), "packed_linear": (0, 2, None),
            "linear_unary": (0, 1, 2)}
# which pattern fits which device: the names Inductor gives its GEMM template choices
TEMPLATE_PATTERNS = {"cpu": "cpp", "cuda": "triton"}


class NoFaultInjectedWarning(UserWarning):
    """``inject_faults`` corrupted nothing: its pattern matched no template choice, or no
    op was autotuned inside it. Verification was not exercised. Turn it into an error with
    ``warnings.simplefilter("error", NoFaultInjectedWarning)`` (or ``-W error::...``)."""


def _nothing_injected(pattern: str, ops: int, names: list[str], skipped: list[str]) -> str:
    hint = ("; patterns that fit: " + ", ".join(f"{v!r} on {k.upper()}" for k, v in
                                                 TEMPLATE_PATTERNS.items()))
    head = f"inject_faults({pattern!r}) corrupted nothing, so verification was not exercised: "
    if not ops:
        return (head + "no op was autotuned inside it (compile and first call inside the "
                "block; a graph compiled before it or loaded from Inductor's cache is not "
                "autotuned again; only max-autotune modes autotune GEMMs)")
    if skipped:
        return head + f"'epilogue' needs a bias input ({', '.join(skipped[:4])} had none)"
    if not names:
        return (head + f"the {ops} autotuned op(s) offered no template choice, only ATen (on "
                "CPU, Inductor's C++ template needs torch._inductor.config.freezing = True "
                "and torch.no_grad())" + hint)
    shown = ", ".join(sorted(set(names))[:4])
    return head + f"it matched none of the template choices offered ({shown}, ...)" + hint


def _holding(like: Any, values: Any) -> Any:
    """A copy of ``like`` (its layout) holding ``values``' elements, cycled or cut to fit."""
    out = strided_copy(like)
    flat = values.detach().reshape(-1)
    count = like.numel()
    out.copy_(flat.repeat(-(-count // max(flat.numel(), 1)))[:count].reshape(like.shape))
    return out


def _faulty_inputs(kind: str, roles: tuple[int, int, int | None], args: tuple) -> list[Any]:
    """The inputs handed to the real kernel for ``kind`` (copies: inputs are never written)."""
    a, b, bias = roles
    args = list(args)
    if kind == "swap":
        args[a], args[b] = _holding(args[a], args[b]), _holding(args[b], args[a])
    elif kind == "k_tail":
        tail = args[a] = strided_copy(args[a])
        k = tail.shape[-1]
        tail[..., k - min(32, max(1, k // 4)):] = 0
    elif kind == "epilogue" and bias is not None:
        args[bias] = strided_copy(args[bias])
        storage_view(args[bias]).zero_()  # the bias may be expanded (stride 0)
    return args


def _faulty_output(kind: str, out: Any) -> None:
    if kind == "wrong":
        out.mul_(1.5).add_(1.0)
    elif kind == "nan":
        out.fill_(float("nan"))
    elif kind == "transpose":  # a (..., M, N) result written column-major
        out.copy_(out.clone().transpose(-2, -1).reshape(out.shape))


class _FaultyChoice(wrapt.ObjectProxy):
    """A template choice whose timed output is corrupted, optionally claiming to be fastest."""

    def __init__(self, wrapped: Any, kind: str, claim_ms: float | None,
                 roles: tuple[int, int, int | None], name: str) -> None:
        super().__init__(wrapped)
        self._self_kind, self._self_claim_ms, self._self_roles = kind, claim_ms, roles
        self._self_name = name

    @property
    def name(self) -> str:
        return self._self_name

    def __hash__(self) -> int:  # one choice per proxy (several may share a kernel)
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    def benchmark(self, *args: Any, out: Any) -> float:
        if self._self_kind == "raise":
            raise RuntimeError("injected fault: kernel failed")
        args = _faulty_inputs(self._self_kind, self._self_roles, args)
        timing = self.__wrapped__.benchmark(*args, out=out)
        _faulty_output(self._self_kind, out)
        return timing if self._self_claim_ms is None else self._self_claim_ms


@contextlib.contextmanager
def inject_faults(pattern: str = ".*", kind: str | Sequence[str] = "wrong", *,
                  mode: str | None = None, fastest: bool = True,
                  templates_only: bool = True) -> Iterator[list[str]]:
    """Corrupt the timed output of autotune choices whose name matches ``pattern``.

    ``pattern`` is a regular expression searched in the choice names: Inductor's templates
    are named ``cpp_...`` on CPU and ``triton_...`` on CUDA (``TEMPLATE_PATTERNS``).
    ``kind`` (``mode=`` is the former name): one of :data:`FAULT_KINDS`; faults that change
    inputs hand the real kernel altered copies, so the output is plausible but wrong. A
    sequence of kinds: each matching choice is offered once per kind, named
    ``<name>:<kind>`` (one op carries every kind; they share its kernel). ``fastest=True``
    makes the faulty choice report a near-zero time so that, unverified, it wins. Yields
    the names it corrupted.
    When the block ends normally having corrupted nothing (the pattern matched no template
    choice, or nothing was autotuned), a :class:`NoFaultInjectedWarning` says why: silence
    would read as "verification passed".
    Works through Inductor's preprocessing-fn hook (torch >= 2.9); on 2.8 only inside an
    override block (the toolkit's ``__call__`` wrapper runs it).
    """
    from torch._inductor import select_algorithm

    kinds = [mode or kind] if isinstance(mode or kind, str) else list(kind)
    for each in kinds:
        if each not in FAULT_KINDS:
            raise ValueError(f"kind={each!r}: expected one of {FAULT_KINDS}")
    regex = re.compile(pattern)
    corrupted: list[str] = []
    candidates: list[str] = []  # names it could have corrupted
    skipped: list[str] = []  # matched, but the kind does not apply to the op
    ops = 0

    def corrupt(choices: list[Any]) -> list[Any]:
        nonlocal ops
        ops += 1
        op = getattr(selector._CURRENT_OP.get(), "name", None)
        roles = OPERANDS.get(op, (0, 1, None))
        out = []
        for choice in choices:
            name = str(getattr(choice, "name", ""))
            extern = is_reference(choice)  # an ExternKernelCaller (any release)
            if not (templates_only and extern):
                candidates.append(name)
            if not regex.search(name) or (templates_only and extern):
                out.append(choice)
                continue
            for each in kinds:
                if each == "epilogue" and roles[2] is None:
                    skipped.append(f"{op}: {name}")
                    continue
                label = name if len(kinds) == 1 else f"{name}:{each}"
                corrupted.append(label)
                out.append(_FaultyChoice(choice, each, 1e-6 if fastest else None, roles, label))
        return out

    import torch._inductor.config as config

    cache = selector_cache(select_algorithm)
    # torch <= 2.8 has no preprocessing hook: the toolkit's __call__ wrapper runs it
    hooks = cache.preprocessing_fns if has_preprocessing_hook(cache) else \
        selector.extra_preprocessing_fns
    hooks.insert(0, corrupt)
    no_caches = {k: False for k in ("autotune_local_cache", "autotune_remote_cache")
                 if hasattr(config, k)}  # faulty timings must never be stored
    completed = False
    try:
        with config.patch(no_caches):
            yield corrupted
        completed = True
    finally:
        _remove(hooks, corrupt)
    if completed and not corrupted:
        warnings.warn(_nothing_injected(pattern, ops, candidates, skipped),
                      NoFaultInjectedWarning, stacklevel=3)


# --- fault injection into fused template kernels (GPU) -------------------------------------

FUSED_FAULT_MARK = "# inductor_sm_override: injected fused-kernel fault"


def corrupt_last_store(source: str, value_as: str = "({value}) * 1.5 + 1.0") -> str:
    """``source`` with its last ``tl.store(ptr, value, ...)`` storing ``value_as`` instead
    (default ``value * 1.5 + 1``)."""
    start = source.rfind("tl.store(")
    if start < 0:
        return source
    depth, index, commas = 0, start + len("tl.store("), []
    while index < len(source):
        char = source[index]
        if char in "([{":
            depth += 1
        elif char in ")]}":
            if depth == 0:
                break
            depth -= 1
        elif char == "," and depth == 0:
            commas.append(index)
        index += 1
    if not commas:
        return source
    end = commas[1] if len(commas) > 1 else index
    value = source[commas[0] + 1:end].strip()
    line_end = source.find("\n", index)
    line_end = len(source) if line_end < 0 else line_end
    corrupted = (source[:commas[0] + 1] + " " + value_as.format(value=value) + source[end:line_end]
                 + f"  {FUSED_FAULT_MARK}" + source[line_end:])
    return corrupted


def _replaced(source: str, old: str, new: str) -> str:
    """The last ``old`` (a regex) replaced by ``new``, the fault mark at the end of its line."""
    found = list(re.finditer(old, source, re.M))
    if not found:
        return source
    at = found[-1]
    line_end = source.find("\n", at.end())
    line_end = len(source) if line_end < 0 else line_end
    return (source[:at.start()] + at.expand(new) + source[at.end():line_end]
            + f"  {FUSED_FAULT_MARK}" + source[line_end:])


def _square(source: str) -> bool:
    sizes = {d: re.findall(rf"^\s*{d} = (\d+)$", source, re.M) for d in "MNK"}
    return all(sizes.values()) and len({v[-1] for v in sizes.values()}) == 1


def corrupt_fused(source: str, kind: str = "wrong") -> str:
    """A fused Triton template kernel's ``source`` with the fault ``kind`` of
    :data:`FAULT_KINDS` (unchanged where it does not apply): "swap" (square sizes only: the
    ``A``/``B`` argument pointers exchanged), "transpose" (the output indices exchanged),
    "k_tail" (the K loop one block short), "epilogue" (the last store writes ``acc``),
    "raise" (a ``tl.static_assert(False)``: the kernel does not compile)."""
    if kind in ("wrong", "nan", "epilogue"):
        return corrupt_last_store(source, {"wrong": "({value}) * 1.5 + 1.0", "epilogue": "acc",
                                           "nan": '({value}) + float("nan")'}[kind])
    if kind == "raise":
        return _replaced(source, r"^([ \t]*)def (triton_\w*\(.*\):)\n([ \t]+)",
                         '\\1def \\2\n\\3tl.static_assert(False, "injected fault")\n\\3')
    if kind == "swap" and _square(source) and re.search(r"^\s*B = arg_B$", source, re.M):
        swapped = _replaced(source, r"^(\s*)A = arg_A$", "\\1A = arg_B")
        return swapped if swapped == source else _replaced(swapped, r"^(\s*)B = arg_B$",
                                                            "\\1B = arg_A")
    if kind == "transpose":
        return _replaced(source, r"idx_m = rm\[:, None\]\n(\s*)idx_n = rn\[None, :\]",
                         "idx_m = rn[None, :]\n\\1idx_n = rm[:, None]")
    if kind == "k_tail":
        mm = _replaced(source, r"range\(0, tl\.cdiv\(K, BLOCK_K\)\)",
                       "range(0, tl.cdiv(K, BLOCK_K) - 1)")
        return mm if mm != source else _replaced(source, r"range\(K, 0, -BLOCK_K\)",
                                                  "range(K, BLOCK_K, -BLOCK_K)")
    return source


def _has_fusion(nodes: Any) -> bool:
    nodes = [n for n in nodes or () if hasattr(n, "is_template")]
    return len(nodes) > 1 and any(n.is_template() for n in nodes)


@contextlib.contextmanager
def inject_fused_faults(kind: str = "wrong") -> Iterator[list[str]]:
    """Corrupt every Triton template kernel fused with a prologue or epilogue with the fault
    ``kind`` (:func:`corrupt_fused`; default: its last ``tl.store`` writes a wrong value), in
    the scheduler's benchmark kernels and in the kernels that run. Unfused kernels are
    untouched. Yields the fused kernels' names it corrupted (each time a source was
    changed). For GPU tests of the fused-kernel check."""
    if kind not in FAULT_KINDS:
        raise ValueError(f"kind={kind!r}: expected one of {FAULT_KINDS}")
    from torch._inductor.codegen.simd import SIMDScheduling
    from torch._inductor.codegen.triton import TritonScheduling

    corrupted: list[str] = []
    generate = vars(SIMDScheduling)["generate_kernel_code_from_nodes"]
    define = vars(TritonScheduling)["define_kernel"]

    def generate_kernel_code_from_nodes(self: Any, nodes: Any, *args: Any, **kwargs: Any) -> Any:
        source = generate(self, nodes, *args, **kwargs)
        changed = corrupt_fused(source, kind) if _has_fusion(nodes) else source
        if changed != source:
            corrupted.append("benchmark:" + "+".join(n.get_name() for n in nodes))
        return changed

    def define_kernel(self: Any, src_code: str, node_schedule: Any, kernel: Any) -> Any:
        changed = corrupt_fused(src_code, kind) if _has_fusion(node_schedule) else src_code
        if changed != src_code:
            corrupted.append("kernel:" + "+".join(n.get_name() for n in node_schedule
                                                  if hasattr(n, "get_name")))
        return define(self, changed, node_schedule, kernel)

    SIMDScheduling.generate_kernel_code_from_nodes = generate_kernel_code_from_nodes
    TritonScheduling.define_kernel = define_kernel
    try:
        yield corrupted
    finally:
        SIMDScheduling.generate_kernel_code_from_nodes = generate
        TritonScheduling.define_kernel = define
