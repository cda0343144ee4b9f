"""Let torch.compile's max-autotune use Triton GEMM templates on mid-size GPUs, safely.

Importing this package imports no torch and patches nothing.
"""

from __future__ import annotations

from typing import Any

from .checked import compile
from .errors import SettingsError, UnsupportedTorchError
from .override import override, status
from .settings import Settings

__version__ = "0.1.0"

__all__ = [
    "Settings",
    "SettingsError",
    "UnsupportedTorchError",
    "__version__",
    "clear_decisions",
    "compile",
    "decisions",
    "override",
    "status",
]


def decisions() -> list[dict[str, Any]]:
    """The 'autotune' events of the ops autotuned in this process (oldest first)."""
    from .autotune import records

    return [record.as_event() for record in records()]


def clear_decisions() -> None:
    """Forget the recorded autotune decisions."""
    from .autotune import clear_records

    clear_records()


def __getattr__(name: str) -> Any:  # PEP 562: later public names load on first use
    raise AttributeError(f"module 'inductor_sm_override' has no attribute {name!r}")
