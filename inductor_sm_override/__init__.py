"""Let torch.compile's max-autotune use Triton GEMM templates on mid-size GPUs, safely.

Importing this package imports no torch, patches nothing, and loads its submodules only
when a name is first used (the start-up hook imports it at interpreter start).
"""

from __future__ import annotations

import importlib

from .core import __version__

_LAZY = {  # public name -> the module that defines it
    "Settings": "core.settings",
    "SettingsError": "core.errors",
    "UnsupportedTorchError": "core.errors",
    "override": "api.block",
    "status": "api.block",
    "compile": "api.checked",
    "backend": "api.backend",
    "decisions": "core.records",
    "clear_decisions": "core.records",
    "cache_hits": "hooks.cache",
    "clear_cache_hits": "hooks.cache",
    "fleet_events": "fleet.decisions",
    "limit_sms": "api.limit",
}

__all__ = [
    "Settings",
    "SettingsError",
    "UnsupportedTorchError",
    "__version__",
    "backend",
    "cache_hits",
    "clear_cache_hits",
    "clear_decisions",
    "compile",
    "decisions",
    "fleet_events",
    "limit_sms",
    "override",
    "status",
]


def __getattr__(name: str) -> object:  # PEP 562
    if name == "testing":  # iso.testing: fault injection and fake devices
        return importlib.import_module(".testing", __name__)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'inductor_sm_override' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | {"testing"})
