"""pytest plugin for `make test-matrix` (loaded with ``-p matrix_plugin``; not a conftest).

``ISO_MATRIX_SKIP`` lists test files (space separated, e.g. ``test_hf_models.py``) that a
matrix run on a non-default torch skips, each with a printed reason: the heaviest framework
tests (transformers/accelerate models) and those of the project's own tools (benchmark smoke
runs, the demo, the docs' examples) run on the default release (`make test`) only, so that
CI fits its time limit; the Makefile can add files for one release (``MATRIX_SKIP_<release>``).
Everything else runs on every release.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_collection_modifyitems(config, items):
    names = set(os.environ.get("ISO_MATRIX_SKIP", "").split())
    if not names:
        return
    import torch

    reason = (f"matrix run on torch {torch.__version__}: not run on this release (CI time "
              "limit; ISO_MATRIX_SKIP); run on the default release by `make test`")
    for item in items:
        if Path(str(item.fspath)).name in names:
            item.add_marker(pytest.mark.skip(reason=reason))
