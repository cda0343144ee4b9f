"""Shared fixtures. No GPU is needed: a CUDA GPU is faked at the device-interface layer."""

from __future__ import annotations

import os
import tempfile

import pytest

# A fresh Inductor cache per test session, even when the user exported one: cached graphs
# or autotune results from an earlier run would skip the very autotuning these tests
# observe (tests/test_suite_isolation.py).
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="iso-inductor-")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def fake_gpu():
    """A 46-SM CUDA GPU (an RTX 4070-class part) as torch and Inductor see it."""
    from inductor_sm_override.testing import fake_cuda_device

    with fake_cuda_device(46) as props:
        yield props


@pytest.fixture(autouse=True)
def nothing_left_patched():
    """Every test must end with torch exactly as it was: no patch, no active layer."""
    import torch._inductor.utils as utils
    from torch._inductor.runtime.hints import DeviceProperties

    from inductor_sm_override.compile_scope import PATCHES
    from inductor_sm_override.core import state
    from inductor_sm_override.torch_plan import compat

    gate = vars(utils)["is_big_gpu"]
    create = vars(DeviceProperties)["create"]
    yield
    assert PATCHES.count == 0 and not PATCHES.installed
    assert vars(utils)["is_big_gpu"] is gate
    assert vars(DeviceProperties)["create"] is create
    assert state.depth() == 0 and state.base() is None
    assert compat is not None
    from inductor_sm_override.torch_plan.config_scope import PROCESS_CONFIG

    assert PROCESS_CONFIG.held() == {}  # no block's config left behind (torch < 2.13)
    assert _hidden_config_keys() == []


def _hidden_config_keys() -> list[str]:
    """Inductor config keys deleted by a test (pytest's monkeypatch undo deletes what a
    module's ``__dict__`` lacks): every later ``getattr`` of one raises in this process."""
    import torch._inductor.config as config

    return sorted(k for k, e in getattr(config, "_config", {}).items()
                  if getattr(e, "hide", False))


@pytest.fixture
def cuda_layout():
    import torch
    from torch._inductor import ir

    return ir.FixedLayout(torch.device("cuda", 0), torch.float16, [64, 64])


@pytest.fixture
def cpu_model():
    """A small plain-torch MLP (two GEMMs) and an input, for real CPU autotuning."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 32)
    ).eval()
    return model, torch.randn(16, 64)


@pytest.fixture(scope="session")
def redis_session():
    """One real redis-server for the session (127.0.0.1, free port, no persistence),
    stopped by its pid at the end. Skipped, with the reason, only where none can run."""
    from redis_server import RedisServer, missing

    why = missing()
    if why is not None:
        print(f"\nskipping Redis tests: {why}")
        pytest.skip(why)
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(redis_session):
    """The session's redis-server, emptied for this test."""
    redis_session.flush()
    yield redis_session
    redis_session.flush()
