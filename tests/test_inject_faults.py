"""``inject_faults`` that corrupts nothing says so (issue 23, item 6): silence would read as
"verification passed". Runs Inductor's real selector with hand-made choices (no compile)."""

from __future__ import annotations

import warnings

import pytest
from selector_harness import Template, extern, lowering, quiet_logging, select

import inductor_sm_override as iso
from inductor_sm_override.testing import (
    TEMPLATE_PATTERNS,
    NoFaultInjectedWarning,
    inject_faults,
)


@pytest.fixture(autouse=True)
def _harness(monkeypatch):
    iso.clear_decisions()
    with quiet_logging(monkeypatch):
        yield


def _autotune(*templates: str) -> None:
    """One real autotuned mm with an ATen choice and the given template names."""
    with lowering() as (a, b, layout), iso.override(quiet=True):
        select("mm", [extern(a, b, layout), *(Template(t, [a, b], layout) for t in templates)],
               a, b, layout)


def _caught(pattern: str, *templates: str, ops: int = 1) -> tuple[list[str], list]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with inject_faults(pattern, "wrong") as corrupted:
            for _ in range(ops):
                _autotune(*templates)
    return corrupted, [w for w in caught if issubclass(w.category, NoFaultInjectedWarning)]


def test_a_pattern_that_matches_nothing_warns_and_names_what_was_offered():
    # the docs' old example on a CPU: "triton_mm" where the template is Inductor's C++ one
    corrupted, found = _caught("triton_mm", "cpp_CppMicroGemmFP32Vec_0")
    assert corrupted == []
    (warning,) = found
    text = str(warning.message)
    assert "inject_faults('triton_mm') corrupted nothing" in text
    assert "verification was not exercised" in text
    assert "cpp_CppMicroGemmFP32Vec_0" in text
    assert "'cpp' on CPU" in text and "'triton' on CUDA" in text
    assert warning.filename == __file__  # points at the user's `with`, not at contextlib


def test_a_matching_pattern_corrupts_and_does_not_warn():
    corrupted, found = _caught(TEMPLATE_PATTERNS["cpu"], "cpp_CppMicroGemmFP32Vec_0")
    assert corrupted == ["cpp_CppMicroGemmFP32Vec_0"] and found == []
    event = iso.decisions()[-1]
    assert "cpp_CppMicroGemmFP32Vec_0" in event["rejected"]  # the fault was real


def test_nothing_autotuned_warns_differently():
    corrupted, found = _caught("cpp", ops=0)
    assert corrupted == []
    assert "no op was autotuned inside it" in str(found[0].message)


def test_aten_only_ops_warn_about_the_missing_template():
    corrupted, found = _caught(".*")  # only the extern: nothing a template pattern can hit
    assert corrupted == []
    text = str(found[0].message)
    assert "offered no template choice, only ATen" in text and "freezing" in text


def test_no_warning_when_the_block_raises():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(KeyError), inject_faults("triton"):
            raise KeyError("user error")
    assert not [w for w in caught if issubclass(w.category, NoFaultInjectedWarning)]


def test_the_warning_can_be_made_an_error():
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoFaultInjectedWarning)
        with pytest.raises(NoFaultInjectedWarning), inject_faults("triton"):
            _autotune("cpp_CppMicroGemmFP32Vec_0")
