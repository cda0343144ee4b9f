"""Helpers for tests and for users checking the toolkit without the hardware.

``fake_cuda_device`` makes torch (and Inductor, which reads device properties through
the dynamo device interface) see a CUDA GPU with a chosen SM count, on a CPU-only
machine. Only for inspecting decisions (gate, heuristics): nothing can run on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any


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
