"""GPUs below compute capability 8.0 (Turing: T4, RTX 20xx): the gate is still lifted when
asked, but the user is told once, with the GPU's name and why (issue 22, item 8)."""

from __future__ import annotations

import warnings

import pytest
import torch._inductor.utils as utils

import inductor_sm_override as iso
from inductor_sm_override.testing import fake_cuda_device
from inductor_sm_override.tools import doctor
from inductor_sm_override.torch_plan import hardware


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.setattr(hardware, "_warned", set())


def _consult(times=2):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with iso.override(verify=False):
            answers = [utils.is_big_gpu(0) for _ in range(times)]
            utils.is_big_gpu.cache_clear()
            answers.append(utils.is_big_gpu(0))  # consulted again, past the cache
    return answers, [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


def test_turing_gpu_warns_once_naming_it_and_why():
    with fake_cuda_device(40, major=7, minor=5, name="Tesla T4"):
        answers, messages = _consult()
    assert answers == [True, True, True]  # lifted as asked: verification still applies
    turing = [m for m in messages if "Tesla T4" in m]
    assert len(turing) == 1, messages
    assert "sm_75" in turing[0] and "FMA" in turing[0] and "8.0" in turing[0]


@pytest.mark.parametrize("major, minor", [(8, 0), (8, 6), (8, 9), (9, 0), (12, 0)])
def test_ampere_and_later_do_not_warn(major, minor):
    with fake_cuda_device(46, major=major, minor=minor, name="Some GPU"):
        answers, messages = _consult()
    assert answers == [True, True, True]
    assert not [m for m in messages if "Some GPU" in m]


def test_outside_a_block_nothing_is_said():
    with fake_cuda_device(40, major=7, minor=5, name="Tesla T4"), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        utils.is_big_gpu.cache_clear()
        assert utils.is_big_gpu(0) is False  # torch's own gate, untouched
        utils.is_big_gpu.cache_clear()
    assert not [w for w in caught if "Tesla T4" in str(w.message)]


def test_doctor_says_it_too():
    with fake_cuda_device(40, major=7, minor=5, name="Tesla T4"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = doctor.collect()
    (gpu,) = info["gpus"]
    assert "Tesla T4 is sm_75" in gpu["note"] and "FMA" in gpu["note"]
    assert "warning: Tesla T4 is sm_75" in doctor.format_text(info)
    with fake_cuda_device(46, major=8, minor=9, name="NVIDIA GeForce RTX 4070"):
        info = doctor.collect()
    assert info["gpus"][0]["note"] is None
    assert "warning:" not in doctor.format_text(info)
