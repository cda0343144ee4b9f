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


# --- issue 27: the fault kinds of fused (Triton, source-level) kernels ---------------------

FUSED_SOURCE = '''@triton.jit
def triton_tem_fused_addmm_gelu_0(in_ptr0, arg_A, arg_B, out_ptr1):
    EVEN_K : tl.constexpr = True
    A = arg_A
    B = arg_B

    M = 64
    N = 64
    K = 64
    for k_idx in range(0, tl.cdiv(K, BLOCK_K)):
        acc += tl.dot(a, b, allow_tf32=ALLOW_TF32, out_dtype=ACC_TYPE)

    idx_m = rm[:, None]
    idx_n = rn[None, :]
    mask = (idx_m < M) & (idx_n < N)
    xindex = idx_n + 64*idx_m
    tmp0 = tl.load(in_ptr0 + (tl.broadcast_to(idx_n, acc.shape)), mask)
    tmp1 = acc + tmp0
    tl.store(out_ptr1 + (tl.broadcast_to(xindex, acc.shape)), tmp1, mask)
'''


def _changed(kind: str, source: str = FUSED_SOURCE) -> list[tuple[str, str]]:
    from inductor_sm_override.testing import FUSED_FAULT_MARK, corrupt_fused

    new = corrupt_fused(source, kind).splitlines()
    assert any(line.endswith(FUSED_FAULT_MARK) for line in new) or new == source.splitlines()
    old = source.splitlines()
    return [(o, n.replace(f"  {FUSED_FAULT_MARK}", "")) for o, n in zip(old, new, strict=False)
            if o != n] + [("", n) for n in new[len(old):]]


@pytest.mark.parametrize("kind, expected", [
    ("wrong", [("    tl.store(out_ptr1 + (tl.broadcast_to(xindex, acc.shape)), tmp1, mask)",
                "    tl.store(out_ptr1 + (tl.broadcast_to(xindex, acc.shape)), (tmp1) * 1.5 + "
                "1.0, mask)")]),
    ("nan", [("    tl.store(out_ptr1 + (tl.broadcast_to(xindex, acc.shape)), tmp1, mask)",
              '    tl.store(out_ptr1 + (tl.broadcast_to(xindex, acc.shape)), (tmp1) + '
              'float("nan"), mask)')]),
    ("epilogue", [("    tl.store(out_ptr1 + (tl.broadcast_to(xindex, acc.shape)), tmp1, mask)",
                   "    tl.store(out_ptr1 + (tl.broadcast_to(xindex, acc.shape)), acc, mask)")]),
    ("swap", [("    A = arg_A", "    A = arg_B"), ("    B = arg_B", "    B = arg_A")]),
    ("transpose", [("    idx_m = rm[:, None]", "    idx_m = rn[None, :]"),
                   ("    idx_n = rn[None, :]", "    idx_n = rm[:, None]")]),
    ("k_tail", [("    for k_idx in range(0, tl.cdiv(K, BLOCK_K)):",
                 "    for k_idx in range(0, tl.cdiv(K, BLOCK_K) - 1):")]),
])
def test_each_fused_kind_changes_the_lines_it_names(kind, expected):
    assert _changed(kind) == expected


def test_a_raising_fused_kernel_does_not_compile():
    changed = _changed("raise")
    assert changed[0] == ("    EVEN_K : tl.constexpr = True",
                          '    tl.static_assert(False, "injected fault")')
    assert changed[1][1] == "    EVEN_K : tl.constexpr = True"


def test_fused_kinds_that_do_not_apply_leave_the_source_alone():
    from inductor_sm_override.testing import corrupt_fused

    wide = FUSED_SOURCE.replace("    N = 64", "    N = 80")
    assert corrupt_fused(wide, "swap") == wide  # non-square: exchanging pointers is unsafe
    assert corrupt_fused(FUSED_SOURCE, "none") == FUSED_SOURCE
    bmm = FUSED_SOURCE.replace("for k_idx in range(0, tl.cdiv(K, BLOCK_K)):",
                               "for k in range(K, 0, -BLOCK_K):")
    assert _changed("k_tail", bmm) == [("    for k in range(K, 0, -BLOCK_K):",
                                        "    for k in range(K, BLOCK_K, -BLOCK_K):")]


def test_inject_fused_faults_refuses_an_unknown_kind():
    from inductor_sm_override.testing import inject_fused_faults

    with pytest.raises(ValueError, match="kind='sideways'"), inject_fused_faults("sideways"):
        pass
