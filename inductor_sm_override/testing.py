"""Helpers for tests and for users checking the toolkit without the hardware.

``fake_cuda_device`` makes torch (and Inductor, which reads device properties through
the dynamo device interface) see a CUDA GPU with a chosen SM count, on a CPU-only
machine. Only for inspecting decisions (gate, heuristics): nothing can run on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Iterator
from typing import Any

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

FAULT_MODES = ("wrong", "nan", "raise", "none")
# which pattern fits which device: the names Inductor gives its GEMM template choices
TEMPLATE_PATTERNS = {"cpu": "cpp", "cuda": "triton"}


class NoFaultInjectedWarning(UserWarning):
    """``inject_faults`` corrupted nothing: its pattern matched no template choice, or no
    op was autotuned inside it. Verification was not exercised. Turn it into an error with
    ``warnings.simplefilter("error", NoFaultInjectedWarning)`` (or ``-W error::...``)."""


def _nothing_injected(pattern: str, ops: int, names: list[str]) -> str:
    hint = ("; patterns that fit: " + ", ".join(f"{v!r} on {k.upper()}" for k, v in
                                                 TEMPLATE_PATTERNS.items()))
    head = f"inject_faults({pattern!r}) corrupted nothing, so verification was not exercised: "
    if not ops:
        return (head + "no op was autotuned inside it (compile and first call inside the "
                "block; a graph compiled before it or loaded from Inductor's cache is not "
                "autotuned again; only max-autotune modes autotune GEMMs)")
    if not names:
        return (head + f"the {ops} autotuned op(s) offered no template choice, only ATen (on "
                "CPU, Inductor's C++ template needs torch._inductor.config.freezing = True "
                "and torch.no_grad())" + hint)
    shown = ", ".join(sorted(set(names))[:4])
    return head + f"it matched none of the template choices offered ({shown}, ...)" + hint


def _faulty_proxy_class() -> type:
    import wrapt

    class _FaultyChoice(wrapt.ObjectProxy):
        """A template choice whose timed output is corrupted, optionally claiming to be fastest."""

        def __init__(self, wrapped: Any, mode: str, claim_ms: float | None) -> None:
            super().__init__(wrapped)
            self._self_mode = mode
            self._self_claim_ms = claim_ms

        def benchmark(self, *args: Any, out: Any) -> float:
            if self._self_mode == "raise":
                raise RuntimeError("injected fault: kernel failed")
            timing = self.__wrapped__.benchmark(*args, out=out)
            if self._self_mode == "wrong":
                out.mul_(1.5).add_(1.0)
            elif self._self_mode == "nan":
                out.fill_(float("nan"))
            return timing if self._self_claim_ms is None else self._self_claim_ms

    return _FaultyChoice


@contextlib.contextmanager
def inject_faults(pattern: str = ".*", mode: str = "wrong", *, fastest: bool = True,
                  templates_only: bool = True) -> Iterator[list[str]]:
    """Corrupt the timed output of autotune choices whose name matches ``pattern``.

    ``pattern`` is a regular expression searched in the choice names: Inductor's templates
    are named ``cpp_...`` on CPU and ``triton_...`` on CUDA (``TEMPLATE_PATTERNS``).
    ``mode``: "wrong" (values scaled and shifted), "nan" (all NaN), "raise" (the benchmark
    raises), "none" (only claim speed). ``fastest=True`` makes the faulty choice report a
    near-zero time so that, unverified, it wins. Yields the list of names it corrupted.
    When the block ends normally having corrupted nothing (the pattern matched no template
    choice, or nothing was autotuned), a :class:`NoFaultInjectedWarning` says why: silence
    would read as "verification passed".
    Works through Inductor's preprocessing-fn hook (torch >= 2.9); on 2.8 only inside an
    override block (the toolkit's ``__call__`` wrapper runs it).
    """
    import re

    from torch._inductor import select_algorithm


    if mode not in FAULT_MODES:
        raise ValueError(f"mode={mode!r}: expected one of {FAULT_MODES}")
    regex = re.compile(pattern)
    proxy = _faulty_proxy_class()
    corrupted: list[str] = []
    candidates: list[str] = []  # names it could have corrupted
    ops = 0

    def corrupt(choices: list[Any]) -> list[Any]:
        nonlocal ops
        ops += 1
        out = []
        for choice in choices:
            name = str(getattr(choice, "name", ""))
            extern = is_reference(choice)  # an ExternKernelCaller (any release)
            if not (templates_only and extern):
                candidates.append(name)
            if regex.search(name) and not (templates_only and extern):
                corrupted.append(name)
                choice = proxy(choice, mode, 1e-6 if fastest else None)
            out.append(choice)
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
        warnings.warn(_nothing_injected(pattern, ops, candidates), NoFaultInjectedWarning,
                      stacklevel=3)


# --- fault injection into fused template kernels (GPU) -------------------------------------

FUSED_FAULT_MARK = "# inductor_sm_override: injected fused-kernel fault"


def corrupt_last_store(source: str) -> str:
    """``source`` with its last ``tl.store(ptr, value, ...)`` storing ``value * 1.5 + 1``."""
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
    corrupted = (source[:commas[0] + 1] + f" ({value}) * 1.5 + 1.0" + source[end:line_end]
                 + f"  {FUSED_FAULT_MARK}" + source[line_end:])
    return corrupted


def _has_fusion(nodes: Any) -> bool:
    nodes = [n for n in nodes or () if hasattr(n, "is_template")]
    return len(nodes) > 1 and any(n.is_template() for n in nodes)


@contextlib.contextmanager
def inject_fused_faults() -> Iterator[list[str]]:
    """Make every Triton template kernel fused with a prologue or epilogue store a wrong
    value (its last ``tl.store``), in the scheduler's benchmark kernels and in the kernels
    that run. Unfused kernels are untouched. Yields the fused kernels' names it corrupted
    (each time a source was made). For GPU tests of the fused-kernel check."""
    from torch._inductor.codegen.simd import SIMDScheduling
    from torch._inductor.codegen.triton import TritonScheduling

    corrupted: list[str] = []
    generate = vars(SIMDScheduling)["generate_kernel_code_from_nodes"]
    define = vars(TritonScheduling)["define_kernel"]

    def generate_kernel_code_from_nodes(self: Any, nodes: Any, *args: Any, **kwargs: Any) -> Any:
        source = generate(self, nodes, *args, **kwargs)
        if _has_fusion(nodes):
            corrupted.append("benchmark:" + "+".join(n.get_name() for n in nodes))
            return corrupt_last_store(source)
        return source

    def define_kernel(self: Any, src_code: str, node_schedule: Any, kernel: Any) -> Any:
        if _has_fusion(node_schedule):
            corrupted.append("kernel:" + "+".join(n.get_name() for n in node_schedule
                                                  if hasattr(n, "get_name")))
            src_code = corrupt_last_store(src_code)
        return define(self, src_code, node_schedule, kernel)

    SIMDScheduling.generate_kernel_code_from_nodes = generate_kernel_code_from_nodes
    TritonScheduling.define_kernel = define_kernel
    try:
        yield corrupted
    finally:
        SIMDScheduling.generate_kernel_code_from_nodes = generate
        TritonScheduling.define_kernel = define
