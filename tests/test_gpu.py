"""On a real GPU (marked gpu; skipped without CUDA): the real gate, verification of a
corrupted Triton template, and the SM simulation. limit_sms timing: test_limit_sms.py."""

from __future__ import annotations

import pytest
import torch
import torch._inductor.config as inductor_config
from torch._inductor.utils import run_and_get_code

import inductor_sm_override as iso
from inductor_sm_override.testing import inject_faults

pytestmark = pytest.mark.gpu
MODE = "max-autotune-no-cudagraphs"


def _mm(m=256, n=256, k=256):
    a = torch.randn(m, k, device="cuda", dtype=torch.float16)
    b = torch.randn(k, n, device="cuda", dtype=torch.float16)
    return a, b


def _compile_mm(a, b, **settings):
    torch._dynamo.reset()
    iso.clear_decisions()
    with inductor_config.patch(fx_graph_cache=False, autotune_local_cache=False), \
            iso.override(**settings):
        out, code = run_and_get_code(torch.compile(lambda x, y: x @ y, mode=MODE), a, b)
    return out, "\n".join(code), iso.decisions()


def test_real_gate_with_simulated_46_sms():
    import torch._inductor.utils as utils

    with iso.override(simulate_sms=46, min_sms=68, verify=False):
        assert utils.is_big_gpu(0) is False  # what a 46-SM part gets today
    a, b = _mm()
    _out, gated_code, _ = _compile_mm(a, b, simulate_sms=46, min_sms=68, verify=False)
    assert "triton_tem" not in gated_code and "triton_mm" not in gated_code
    out, _code, events = _compile_mm(a, b, simulate_sms=46)
    assert events and any(n.startswith("triton_mm") for n in events[0]["offered"])
    assert events[0]["sms"] == 46
    torch.testing.assert_close(out, a @ b, rtol=2e-2, atol=2e-2)


def test_corrupted_triton_template_is_rejected_and_compile_is_right():
    a, b = _mm()
    with inject_faults("triton_mm", "wrong") as corrupted:
        out, _code, events = _compile_mm(a, b, max_choices=4)
    assert corrupted
    (event,) = events
    assert set(corrupted) & set(event["rejected"])
    assert event["winner"] not in event["rejected"]
    torch.testing.assert_close(out, a @ b, rtol=2e-2, atol=2e-2)


def test_unverified_corrupted_template_wins_sanity_baseline():
    a, b = _mm()
    with inject_faults("triton_mm", "wrong") as corrupted:
        _out, _code, events = _compile_mm(a, b, max_choices=4, verify=False)
    assert events[0]["winner"] in corrupted
