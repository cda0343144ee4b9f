"""The SM gate on a faked 46-SM CUDA GPU: gated, allowed inside, gated after."""

from __future__ import annotations

import logging

import pytest
import torch
import torch._inductor.utils as utils
from torch._inductor.runtime.hints import DeviceProperties

import inductor_sm_override as iso

F16 = [torch.float16]
CUDA0 = torch.device("cuda", 0)


def allowed(layout) -> bool:
    return bool(utils._use_template_for_gpu(layout, F16))


def test_gated_allowed_gated(fake_gpu, cuda_layout):
    original = utils.is_big_gpu
    assert utils.is_big_gpu(0) is False and not allowed(cuda_layout)
    with iso.override():
        assert utils.is_big_gpu(0) is True
        assert utils.is_big_gpu(CUDA0) is True
        assert allowed(cuda_layout)
    assert utils.is_big_gpu is original
    assert utils.is_big_gpu(0) is False and not allowed(cuda_layout)


def test_min_sms_threshold_and_nesting(fake_gpu, cuda_layout):
    with iso.override(min_sms=40):
        assert allowed(cuda_layout)
        with iso.override(min_sms=50):
            assert not allowed(cuda_layout)  # 46 < 50: inner wins
            with iso.override(min_sms=46):
                assert allowed(cuda_layout)  # >= is inclusive
            assert not allowed(cuda_layout)
        assert allowed(cuda_layout)
    assert not allowed(cuda_layout)


def test_other_dtype_condition_kept(fake_gpu):
    from torch._inductor import ir

    layout = ir.FixedLayout(CUDA0, torch.int8, [64, 64])
    with iso.override():
        assert not allowed(layout)  # dtype rule is torch's, unchanged


def test_rocm_rule_stays(monkeypatch, cuda_layout):
    from inductor_sm_override.testing import fake_cuda_device

    monkeypatch.setattr(torch.version, "hip", "6.2")
    # ROCm arch < 9: torch says no whatever the SMs
    with fake_cuda_device(120, major=8), iso.override():
        assert utils.is_big_gpu(0) is False
    with fake_cuda_device(40, major=9):  # ROCm arch 9: torch says yes (no SM check there)
        utils.is_big_gpu.cache_clear()
        assert utils.is_big_gpu(0) is True


def test_no_torch_warning_while_overridden_and_one_info_of_ours(fake_gpu, caplog):
    caplog.set_level(logging.INFO)
    with iso.override():
        for _ in range(3):
            assert utils.is_big_gpu(0)
    texts = [r.getMessage() for r in caplog.records]
    assert not any("Not enough SMs" in t for t in texts)
    ours = [t for t in texts if "SM gate overridden" in t]
    assert len(ours) == 1 and "cuda:0" in ours[0] and "46 SMs" in ours[0] and "68" in ours[0]
    caplog.clear()
    assert utils.is_big_gpu(0) is False  # after: torch's own answer and warning again
    assert any("Not enough SMs" in r.getMessage() for r in caplog.records)


def test_gate_caches_cleared_on_both_edges(fake_gpu):
    assert utils.is_big_gpu(0) is False  # torch caches its False
    assert utils.is_big_gpu.cache_info().currsize == 1
    with iso.override():
        assert utils.is_big_gpu.__wrapped__.cache_info().currsize == 0
        assert utils.is_big_gpu(0) is True
    assert utils.is_big_gpu.cache_info().currsize == 0
    assert utils.is_big_gpu(0) is False


def test_simulate_sms_changes_what_inductor_sees_and_restores(fake_gpu):
    create = vars(DeviceProperties)["create"]
    assert DeviceProperties.create(CUDA0).multi_processor_count == 46
    with iso.override(simulate_sms=132, min_sms=68):
        assert DeviceProperties.create(CUDA0).multi_processor_count == 132
        assert utils.get_num_sms() == 132
        assert utils.is_big_gpu(0) is True  # the simulated part is big
    with iso.override(simulate_sms=46, min_sms=68):
        assert utils.is_big_gpu(0) is False  # a simulated mid-size part is gated...
        with iso.override(min_sms=0):
            assert utils.is_big_gpu(0) is True  # ...and passes with the override
    assert vars(DeviceProperties)["create"] is create
    assert DeviceProperties.create(CUDA0).multi_processor_count == 46
    assert utils.get_num_sms() == 46


def test_simulate_leaves_cpu_properties_alone(fake_gpu):
    before = DeviceProperties.create(torch.device("cpu")).multi_processor_count
    assert before != 7
    with iso.override(simulate_sms=7):
        assert DeviceProperties.create(torch.device("cpu")).multi_processor_count == before


def test_exception_inside_restores(fake_gpu):
    original = utils.is_big_gpu
    with pytest.raises(KeyError), iso.override():
        assert utils.is_big_gpu(0)
        raise KeyError("boom")
    assert utils.is_big_gpu is original and utils.is_big_gpu(0) is False
    assert iso.status()["patched"] is False
