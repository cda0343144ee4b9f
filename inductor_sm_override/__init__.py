"""Let torch.compile's max-autotune use Triton GEMM templates on mid-size GPUs, safely.

Importing this package imports no torch, patches nothing, and loads its submodules only
when a name is first used (the start-up hook imports it at interpreter start).
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs ~2 ms at start-up

__version__ = "0.1.0"

_LAZY = {
    "Settings": "settings",
    "SettingsError": "errors",
    "UnsupportedTorchError": "errors",
    "override": "block",
    "status": "block",
    "compile": "checked",
    "backend": "torch_backend",
    "decisions": "autotune",
    "clear_decisions": "autotune",
    "cache_hits": "cache",
    "clear_cache_hits": "cache",
    "fleet_events": "fleet",
    "limit_sms": "limit",
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

if TYPE_CHECKING:
    from .autotune import clear_decisions, decisions
    from .block import override, status
    from .cache import cache_hits, clear_cache_hits
    from .checked import compile
    from .errors import SettingsError, UnsupportedTorchError
    from .fleet import fleet_events
    from .limit import limit_sms
    from .settings import Settings
    from .torch_backend import backend


def __getattr__(name: str) -> object:  # PEP 562
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'inductor_sm_override' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
