"""What a new user meets first (issue 28): quiet compiles, mode="default" as torch passes it,
docs that say what holds."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

import inductor_sm_override as iso
from inductor_sm_override import compile_scope
from inductor_sm_override.api import backend as backend_module
from inductor_sm_override.core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def _doc(name: str) -> str:
    return " ".join((ROOT / name).read_text().split())


def test_quiet_silences_torch_for_the_compile_and_restores_everything_after():
    import torch._inductor.config as config

    keys = [k for k in compile_scope.QUIET_CONFIG if hasattr(config, k)]
    assert keys, "this torch has none of the keys that print autotune tables"
    before = {k: getattr(config, k) for k in keys}
    filters = list(warnings.filters)
    with compile_scope.applied(compile_scope.Binding(Settings(quiet=True))), \
            warnings.catch_warnings(record=True) as caught:
        assert {k: getattr(config, k) for k in keys} == {
            k: compile_scope.QUIET_CONFIG[k] for k in keys}
        warnings.warn("TypedStorage is deprecated. It will be removed", UserWarning,
                      stacklevel=1)
        warnings.warn("the user's own warning", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["the user's own warning"]
    assert {k: getattr(config, k) for k in keys} == before
    assert list(warnings.filters) == filters
    with compile_scope.applied(compile_scope.Binding(Settings())):  # not quiet: untouched
        assert {k: getattr(config, k) for k in keys} == before
        assert list(warnings.filters) == filters


def test_torch_drops_mode_default_before_the_backend_and_the_docs_say_so():
    """torch.compile(mode="default") reaches no backend (``_TorchCompileWrapper`` passes a
    mode only ``if mode and mode != "default"``): iso.backend keeps its own mode."""
    backend = iso.backend()
    wrapper = torch._TorchCompileWrapper(backend, "default", None, None)
    assert wrapper.kwargs == {}
    assert backend._config_for(wrapper.kwargs) == backend.config
    assert backend.config.get("max_autotune") is True
    plain = iso.backend(mode="default")
    assert not plain.config.get("max_autotune")
    for doc in ("README.md", "docs/api.md"):
        text = _doc(doc)
        assert 'torch.compile(..., mode="default")' in text and 'iso.backend(mode="default")' \
            in text, doc
    assert 'mode="default"' in " ".join(backend_module.__doc__.split())


def test_docs_times_are_measured_with_the_machine_and_the_cache_note_holds():
    readme, guide = _doc("README.md"), _doc("docs/guide.md")
    assert "about 20-40 s on 2 cores" not in readme  # the old guess (measured: 10-16 s)
    assert "2-core CPU, torch 2.13.0+cpu" in readme and "2-core CPU, torch 2.13.0+cpu" in guide
    # with frozen CPU weights Inductor bypasses its graph cache: a second run autotunes again
    assert "a second run of the script) is loaded" not in guide
    assert "frozen weights" in guide and "bypasses its graph cache" in guide
    for doc in ("README.md", "docs/api.md", "docs/environment.md"):
        assert "AUTOTUNE" in _doc(doc), doc  # what quiet keeps off is said
