"""Verification of forced kernels with real CPU autotuning and injected faults."""

from __future__ import annotations

import pytest
import torch
from cpu_compile import compile_under
from selector_harness import compiling

import inductor_sm_override as iso
from inductor_sm_override.testing import inject_faults

pytestmark = pytest.mark.slow


def _faulty_run(model, x, mode, **settings):
    with inject_faults("cpp_", mode) as corrupted:
        out, _code, events = compile_under(model, x, **settings)
    assert corrupted, "the fault injection must have hit the template choices"
    return out, events, corrupted


def test_unverified_wrong_fastest_choice_wins_sanity_baseline(cpu_model):
    model, x = cpu_model
    _out, events, corrupted = _faulty_run(model, x, "wrong", verify=False)
    assert [e["winner"] for e in events] == corrupted  # the injection really works
    assert all(e["rejected"] == {} for e in events)


@pytest.mark.parametrize("mode, reason", [("wrong", "mismatch vs extern _mkl_linear"),
                                          ("nan", "NaN/Inf values where the reference"),
                                          ("raise", "RuntimeError: injected fault")])
def test_verified_block_rejects_faulty_choice_and_compiles_right(cpu_model, mode, reason):
    model, x = cpu_model
    out, events, corrupted = _faulty_run(model, x, mode, verify=True)
    for event, bad in zip(events, corrupted, strict=True):
        assert event["winner"] == "_mkl_linear"
        assert reason in event["rejected"][bad]
        assert event["rejected_by"][bad] == ("crash" if mode == "raise" else "check")
        assert event["timings"][bad] is None
    torch.testing.assert_close(out, model(x))


def test_torch_verify_assertion_rejects_instead_of_aborting(cpu_model, monkeypatch):
    from torch._inductor import select_algorithm

    model, x = cpu_model
    monkeypatch.setattr(select_algorithm, "VERIFY", {"atol": 1e-9, "rtol": 1e-9})
    out, events, corrupted = _faulty_run(model, x, "wrong", verify=False)
    for event, bad in zip(events, corrupted, strict=True):
        assert event["rejected"][bad].startswith("AssertionError")
        assert event["rejected_by"][bad] == "torch"  # torch's own VERIFY, not ours
        assert event["winner"] == "_mkl_linear"
    torch.testing.assert_close(out, model(x))


def test_unverifiable_autotune_paths_are_off_only_in_verified_blocks():
    import torch._inductor.config as config

    with config.patch(autotune_in_subproc=True, autotune_local_cache=True):
        with iso.override(verify=True), compiling():
            assert config.autotune_in_subproc is False
            assert config.autotune_local_cache is False
            if hasattr(config, "pipeline_max_autotune_gemm"):
                assert config.pipeline_max_autotune_gemm is False
        with iso.override(verify=False), compiling():
            assert config.autotune_in_subproc is True  # the user's choice stands
            assert config.autotune_local_cache is True
        assert config.autotune_in_subproc is True


def test_user_subprocess_autotuning_is_brought_in_process_and_verified(cpu_model):
    """The user asked for subprocess autotuning; inside a verified block the benchmark
    runs in-process, so the faulty choice is seen and rejected."""
    import torch._inductor.config as config

    model, x = cpu_model
    with config.patch(autotune_in_subproc=True):
        out, events, corrupted = _faulty_run(model, x, "wrong", verify=True)
    for event, bad in zip(events, corrupted, strict=True):
        # rejected by the check itself (an in-process benchmark), not by the fail-closed
        # saver's "unverified path", which a subprocess timing would get
        assert event["rejected"][bad].startswith("mismatch vs extern"), event["rejected"]
        assert event["checks"][bad]["passed"] is False
    torch.testing.assert_close(out, model(x))


def test_verification_survives_user_clearing_inductors_hook_lists(cpu_model):
    from torch._inductor import select_algorithm

    model, x = cpu_model
    iso.clear_decisions()
    with iso.override(verify=True):
        select_algorithm.clear_preprocessing_fns()  # user code wipes the hooks mid-block
        select_algorithm.clear_feedback_savers()
        torch._dynamo.reset()
        with inject_faults("cpp_", "wrong") as corrupted, torch.no_grad(), \
                torch._inductor.config.patch(freezing=True):
            out = torch.compile(model, mode="max-autotune-no-cudagraphs")(x)
    torch.testing.assert_close(out, model(x))
    events = iso.decisions()
    assert len(events) == 2 and corrupted
    assert all(set(e["rejected"]) & set(corrupted) for e in events)
