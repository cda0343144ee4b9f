"""Torch's own autotune chatter kept out of a plain compile's output (the demo's plain mode,
doctor), everything put back after: compile_scope.py's quiet pieces (compiles under
``quiet=True`` get them there), and the "Not enough SMs ..." log line."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from ..compile_scope import QUIET_CONFIG, warnings_hidden

GATE_LOGGER = "torch._inductor.utils"  # "Not enough SMs to use max_autotune_gemm mode"


@contextlib.contextmanager
def torch_autotune_output_hidden() -> Iterator[None]:
    """Inside: no autotune tables from Inductor, no TypedStorage warning, no SM-gate log
    line. After: the caller's config, warning filters and logger level exactly as before."""
    import torch._inductor.config as config

    patches = {k: v for k, v in QUIET_CONFIG.items() if hasattr(config, k)}
    logger = logging.getLogger(GATE_LOGGER)
    level = logger.level
    with warnings_hidden(), config.patch(patches):
        logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            logger.setLevel(level)
