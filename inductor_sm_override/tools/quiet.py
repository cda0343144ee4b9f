"""Keep torch's own autotune chatter out of a block's output, and put everything back after.

Inductor writes an ``AUTOTUNE ...`` table and an ``Autotune Choices Stats`` line to stderr
for every autotuned op (``sys.stderr.write``, not logging: only its config switches them
off), torch 2.11-2.13's autotuner warns ``TypedStorage is deprecated`` from inside
``select_algorithm``, and ``torch._inductor.utils`` logs "Not enough SMs ..." where the
demo says the same in its own words. This module switches those off for one block only:
Inductor's config through ``config.patch`` (restored on exit), the warning through
``warnings.catch_warnings`` (filters restored on exit) and the logger's level (restored
on exit, whatever it was). Nothing else is touched.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

# Inductor config keys that print autotune results, and the value that silences each
SILENT_CONFIG = {"autotune_num_choices_displayed": 0, "max_autotune_report_choices_stats": False}
GATE_LOGGER = "torch._inductor.utils"  # "Not enough SMs to use max_autotune_gemm mode"
TYPED_STORAGE = "TypedStorage is deprecated"


@contextlib.contextmanager
def torch_autotune_output_hidden() -> Iterator[None]:
    """Inside: no autotune tables from Inductor, no TypedStorage warning, no SM-gate log
    line. After: the caller's config, warning filters and logger level exactly as before."""
    import torch._inductor.config as config

    patches = {k: v for k, v in SILENT_CONFIG.items() if hasattr(config, k)}
    logger = logging.getLogger(GATE_LOGGER)
    level = logger.level
    with warnings.catch_warnings(), config.patch(patches):
        warnings.filterwarnings("ignore", message=TYPED_STORAGE, category=UserWarning)
        logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            logger.setLevel(level)
