"""Behaviour that `make mutation` (docs/mutation.md) found untested: each test kills mutants
that survived the rest of the fast suite. Plain unit tests, no compile, no subprocess."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import pathlib
import types
import warnings

import pytest
import torch

import inductor_sm_override as iso
from inductor_sm_override.core import events, state
from inductor_sm_override.core.budget import PRIOR_S_PER_CHOICE, Budget
from inductor_sm_override.core.errors import SettingsError
from inductor_sm_override.core.patching import Append, Patch, PatchSet
from inductor_sm_override.core.settings import (
    Settings,
    _edits,
    accepted,
    env_layer,
    near_miss_line,
    near_misses,
    parse_bool_word,
    report_path_problem,
    resolve_path,
)
from inductor_sm_override.hooks import gate

# --- core/budget.py --------------------------------------------------------------------------


def test_first_op_share_is_the_larger_of_half_the_budget_and_two_prior_choices():
    # 2 s, nothing measured: min(2, max(2 * 0.5, 2 * 0.5)) = 1 s -> one template + the extern
    assert Budget(2.0).allowance(5) == (1, 2 * PRIOR_S_PER_CHOICE)
    # 40 s: half of it (20 s) caps the first op: 20 // 0.5 - 1 = 39 templates
    assert Budget(40.0).allowance(100) == (39, 40 * PRIOR_S_PER_CHOICE)


def test_a_single_template_is_allowed_when_the_budget_covers_it():
    assert Budget(100.0).allowance(1) == (1, 2 * PRIOR_S_PER_CHOICE)


def test_reservations_of_ops_in_flight_add_up():
    b = Budget(100.0)
    _, r1 = b.allowance(3)
    _, r2 = b.allowance(2)
    assert b.reserved == pytest.approx(r1 + r2)
    assert b.remaining == pytest.approx(100.0 - r1 - r2)


def test_an_op_that_ran_no_choice_is_charged_but_not_measured():
    b = Budget(10.0)
    b.settle(0.0, 1.0, 0)
    assert b.spent == 1.0 and b.per_choice == PRIOR_S_PER_CHOICE
    assert b.smallest_unit == float("inf")
    b.settle(0.0, 1.0, 2)
    assert b.per_choice == 0.5 and b.smallest_unit == 1.0


def test_per_choice_is_the_mean_over_every_measured_op():
    b = Budget(10.0)
    b.settle(0.0, 0.2, 1)  # one choice, under a second
    assert b.per_choice == pytest.approx(0.2)
    b.settle(0.0, 3.0, 1)
    assert b.per_choice == pytest.approx(1.6)  # (0.2 + 3.0) / 2
    b.settle(0.0, 1.8, 3)
    assert b.per_choice == pytest.approx(1.0)  # 5.0 s / 5 choices
    assert b.smallest_unit == pytest.approx(0.2)


def test_as_dict_rounds_to_four_places_and_never_reports_negative_remaining():
    b = Budget(10.0)
    assert b.as_dict() == {"budget_s": 10.0, "spent_s": 0.0, "remaining_s": 10.0,
                           "per_choice_s": PRIOR_S_PER_CHOICE}
    b.settle(0.0, 1.23456, 3)
    assert b.as_dict() == {"budget_s": 10.0, "spent_s": 1.2346, "remaining_s": 8.7654,
                           "per_choice_s": 0.4115}
    b.settle(0.0, 20.0, 1)
    assert b.as_dict()["remaining_s"] == 0.0


# --- checks/verify.py ------------------------------------------------------------------------


def test_reduction_length_of_baddbmm_is_read_from_the_batch_operand():
    from inductor_sm_override.checks.verify import reduction_length

    assert reduction_length("baddbmm", [[2, 8, 4], [2, 8, 96], [2, 96, 4]]) == 96


def test_fp64_reference_per_op_and_arity():
    from inductor_sm_override.checks.verify import fp64_reference

    a, b = torch.randn(2, 4, 5), torch.randn(2, 5, 3)
    torch.testing.assert_close(fp64_reference("bmm", [a, b]), a.double() @ b.double())
    i, j = torch.randint(-9, 9, (4, 6), dtype=torch.int8), torch.randint(-9, 9, (6, 3),
                                                                        dtype=torch.int8)
    exact = fp64_reference("int_mm", [i, j])
    assert exact.dtype == torch.float64
    assert torch.equal(exact, i.double() @ j.double())
    m = [torch.randn(4, 5), torch.randn(5, 3), torch.randn(4, 6), torch.randn(6, 3)]
    torch.testing.assert_close(fp64_reference("mm_plus_mm", m),
                               m[0].double() @ m[1].double() + m[2].double() @ m[3].double())
    assert fp64_reference("mm_plus_mm", m[:2]) is None  # wrong arity: no reference
    assert fp64_reference("mm", [m[0], m[1], m[2]]) is None
    assert fp64_reference("convolution", [m[0]]) is None


def test_fp64_reference_is_float32_on_mps():
    from inductor_sm_override.checks.verify import fp64_reference

    class OnMps:  # an MPS tensor as far as the reference needs (no fp64 there)
        device = types.SimpleNamespace(type="mps")

        def __init__(self, t):
            self.t = t

        def to(self, dtype):
            return self.t.to(dtype)

    a, b = torch.randn(4, 5), torch.randn(5, 3)
    assert fp64_reference("mm", [OnMps(a), OnMps(b)]).dtype == torch.float32


# --- core/settings.py ------------------------------------------------------------------------


def test_a_report_path_like_is_kept_as_text():
    assert Settings(report=pathlib.Path("/tmp/r.jsonl")).report == "/tmp/r.jsonl"


def test_resolve_path_fills_rank_and_pid(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    assert resolve_path("r{rank}-{pid}.jsonl") == f"r0-{os.getpid()}.jsonl"
    monkeypatch.setenv("RANK", "3")
    assert resolve_path("r{rank}.jsonl") == "r3.jsonl"


def test_report_path_problem_cases(tmp_path):
    existing = tmp_path / "old.jsonl"
    existing.write_text("")
    assert report_path_problem(str(existing)) is None
    assert report_path_problem(str(tmp_path / "new.jsonl")) is None
    assert report_path_problem(str(tmp_path)) == f"{tmp_path} is a folder, not a file"
    assert report_path_problem(str(existing / "r.jsonl")) == f"{existing} is a file, not a folder"


def test_fleet_scope_is_normalised_and_non_text_refused():
    assert Settings(fleet=" Node ").fleet == "node"
    with pytest.raises(SettingsError, match="fleet=3 is not accepted: expected node or job"):
        Settings(fleet=3)


def test_parse_bool_word_names_the_bad_word():
    with pytest.raises(ValueError, match=r"^maybe$"):
        parse_bool_word("maybe")


def test_accepted_says_whether_none_is_allowed():
    assert accepted("min_sms") == "an integer >= 0"
    assert accepted("max_choices") == "an integer >= 0 or None"


def test_field_names_in_declaration_order():
    names = Settings.field_names()
    assert names[:3] == ("min_sms", "max_choices", "budget_s") and names[-1] == "fleet_timeout_s"
    assert len(names) == len(dataclasses.fields(Settings))


def test_from_env_reads_the_process_environment(monkeypatch):
    monkeypatch.setenv("INDUCTOR_SM_OVERRIDE_MIN_SMS", "7")
    assert Settings.from_env().min_sms == 7
    assert Settings.from_env({}).min_sms == 0


def test_env_layer_messages_and_blank_values(tmp_path):
    assert env_layer({}) == {}
    assert env_layer({"INDUCTOR_SM_OVERRIDE_MIN_SMS": "  "}) == {}
    with pytest.raises(SettingsError, match="expected one of INDUCTOR_SM_OVERRIDE, "
                                            "INDUCTOR_SM_OVERRIDE_MIN_SMS, "
                                            "INDUCTOR_SM_OVERRIDE_MAX_CHOICES, "):
        env_layer({"INDUCTOR_SM_OVERRIDE_MINSMS": "1"})
    with pytest.raises(SettingsError) as bad_bool:
        env_layer({"INDUCTOR_SM_OVERRIDE_VERIFY": "maybe"})
    assert str(bad_bool.value) == ("INDUCTOR_SM_OVERRIDE_VERIFY='maybe' is not accepted: "
                                   "expected one of 1/true/on/yes/0/false/off/no (any case)")
    with pytest.raises(SettingsError) as bad_int:
        env_layer({"INDUCTOR_SM_OVERRIDE_MIN_SMS": "many"})
    assert str(bad_int.value) == ("INDUCTOR_SM_OVERRIDE_MIN_SMS='many' is not accepted: "
                                  "expected an integer >= 0")
    good = str(tmp_path / "r.jsonl")
    assert env_layer({"INDUCTOR_SM_OVERRIDE_REPORT": good}) == {"report": good}
    with pytest.raises(SettingsError) as folder:
        env_layer({"INDUCTOR_SM_OVERRIDE_REPORT": str(tmp_path)})
    assert str(folder.value) == (f"INDUCTOR_SM_OVERRIDE_REPORT={str(tmp_path)!r} is not "
                                 f"accepted: {tmp_path} is a folder, not a file")


def test_edit_distance():
    assert _edits("kitten", "sitting") == 3
    assert _edits("flaw", "lawn") == 2
    assert _edits("", "abc") == 3 and _edits("abc", "") == 3 and _edits("abc", "abc") == 0


def test_near_misses_and_their_line():
    environ = {"INDUCTOR_SM_OVERIDE_MIN_SMS": "1", "inductor_sm_override": "1",
               "INDUCTOR_SM_THING": "1", "PATH": "/bin", "INDUCTOR_SM_OVERRIDE_VERIFY": "1",
               "MY_SM_OVERRIDES": "1"}
    assert near_misses(environ) == {"INDUCTOR_SM_OVERIDE_MIN_SMS": "INDUCTOR_SM_OVERRIDE_MIN_SMS",
                                    "inductor_sm_override": "INDUCTOR_SM_OVERRIDE"}
    assert near_miss_line({"inductor_sm_override": "1", "PATH": "/bin"}) == (
        "inductor_sm_override is not a variable of this package (ignored): did you mean "
        "INDUCTOR_SM_OVERRIDE?")
    two = near_miss_line({"inductor_sm_override": "1", "Inductor_SM_Override_Verify": "1"})
    assert two.count("; ") == 1 and "did you mean INDUCTOR_SM_OVERRIDE_VERIFY?" in two
    assert near_miss_line({"PATH": "/bin"}) is None


# --- hooks/gate.py ---------------------------------------------------------------------------


def test_torch_threshold_per_device_type():
    assert gate.torch_threshold("xpu") == 16
    assert gate.torch_threshold("cuda") == 68 == gate.torch_threshold("hip")


def test_device_of_positional_keyword_and_default(monkeypatch):
    assert gate._device_of((torch.device("cuda", 2),), {}) == torch.device("cuda", 2)
    assert gate._device_of(("cuda:1",), {}) == torch.device("cuda", 1)
    assert gate._device_of((), {"device": "cuda:1"}) == torch.device("cuda", 1)
    import torch._inductor.utils as utils

    monkeypatch.setattr(utils, "get_gpu_type", lambda: "xpu")
    assert gate._device_of((3,), {}) == torch.device("xpu", 3)
    assert gate._device_of((), {}) == torch.device("xpu", 0)

    def broken():
        raise RuntimeError("no GPU type")

    monkeypatch.setattr(utils, "get_gpu_type", broken)
    assert gate._device_of((2,), {}) == torch.device("cuda", 2)


def test_note_publishes_the_gate_event_and_logs_once_per_device(monkeypatch, caplog):
    seen = []
    monkeypatch.setattr(events, "listeners", [seen.append])
    monkeypatch.setattr(gate, "_logged", set())
    settings = Settings()
    caplog.set_level(logging.INFO, logger="inductor_sm_override")
    gate._note(torch.device("cuda", 5), 46, 40, 68, True, settings)
    assert seen == [{"event": "gate", "device": "cuda:5", "sms": 46, "threshold": 40,
                     "torch_threshold": 68, "torch_answer": False, "answer": True}]
    gate._note(torch.device("cuda", 5), 46, 40, 68, True, settings)  # logged once
    gate._note(torch.device("cuda", 6), 46, 40, 68, True, settings)  # another device: again
    gate._note(torch.device("cuda", 7), 68, 40, 68, True, settings)  # torch agrees: no line
    assert seen[-1]["torch_answer"] is True
    gate._note(torch.device("cuda", 8), 30, 40, 68, False, settings)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "inductor_sm_override: SM gate overridden for cuda:5 (46 SMs, "
                       "threshold 40 instead of 68)"),
        (logging.INFO, "inductor_sm_override: SM gate overridden for cuda:6 (46 SMs, "
                       "threshold 40 instead of 68)"),
        (logging.WARNING, "inductor_sm_override: cuda:8 has 30 SMs, below min_sms=40: "
                          "max_autotune_gemm stays off"),
    ]


def test_note_writes_the_gate_event_to_the_report(tmp_path, monkeypatch):
    monkeypatch.setattr(gate, "_logged", set())
    path = tmp_path / "r.jsonl"
    with iso.override(report=str(path)):
        gate._note(torch.device("cuda", 4), 46, 40, 68, True, state.current())
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert any(e.get("event") == "gate" and e.get("device") == "cuda:4" for e in lines)


def test_simulated_sm_count_wrappers_pass_through_outside_simulation():
    def echo(*args, **kwargs):
        return args, kwargs

    assert gate._simulated_max_sms(echo, None, (1,), {"d": 2}) == ((1,), {"d": 2})
    assert gate._simulated_properties(echo, None, (1,), {"d": 2}) == ((1,), {"d": 2})
    with iso.override():
        assert gate._simulated_max_sms(echo, None, (1,), {"d": 2}) == ((1,), {"d": 2})
    with iso.override(simulate_sms=20):
        assert gate._simulated_max_sms(echo, None, (), {}) == 20
        plain = object()  # no ``type`` field: not a GPU's properties, left alone
        assert gate._simulated_properties(lambda: plain, None, (), {}) is plain


def test_compare_early_outcomes_report_the_tolerances_used():
    from inductor_sm_override.checks.verify import Check, compare

    z23, z32 = torch.zeros(2, 3), torch.zeros(3, 2)
    assert compare(z23, z32, rtol=0.1, atol=0.5) == Check(
        False, math.inf, math.inf, 0.1, 0.5, "shape (2, 3) != reference (3, 2)")
    assert compare(z23, z32, rtol=0.1).atol == 0.0
    empty = torch.zeros(0, 3)
    assert compare(empty, empty, rtol=0.1) == Check(True, 0.0, 0.0, 0.1, 0.0)
    assert compare(empty, empty, rtol=0.1, atol=0.5) == Check(True, 0.0, 0.0, 0.1, 0.5)
    assert not compare(torch.tensor([1.0]), torch.tensor([5.0])).passed  # one element


def test_compare_relative_error_is_against_the_reference_rms():
    from inductor_sm_override.checks.verify import compare

    one = compare(torch.tensor([3.0]), torch.tensor([4.0]), rtol=0.0, atol=5.0)
    assert one.passed and one.max_abs == 1.0 and one.max_rel == pytest.approx(0.25)
    small = compare(torch.tensor([0.25]), torch.tensor([0.5]), rtol=0.0, atol=5.0)
    assert small.max_rel == pytest.approx(0.5)  # RMS 0.5, not clamped up to 1


def test_a_user_atol_applies_to_integer_outputs():
    from inductor_sm_override.checks.verify import compare

    ints = torch.arange(6, dtype=torch.int32)
    assert not compare(ints + 1, ints).passed
    assert compare(ints + 1, ints, atol=1.0).passed


def test_wide_dtype_for_the_comparison():
    from inductor_sm_override.checks.verify import _wide_dtype

    def t(dtype, device="cpu"):
        return types.SimpleNamespace(dtype=dtype, device=types.SimpleNamespace(type=device))

    assert _wide_dtype(t(torch.float16), t(torch.float16)) == torch.float32
    assert _wide_dtype(t(torch.float32), t(torch.float32)) == torch.float32
    assert _wide_dtype(t(torch.complex64), t(torch.complex64)) == torch.float32
    assert _wide_dtype(t(torch.float16), t(torch.float64)) == torch.float64
    assert _wide_dtype(t(torch.float64), t(torch.float32)) == torch.float64
    assert _wide_dtype(t(torch.int32), t(torch.int32)) == torch.float64
    assert _wide_dtype(t(torch.int32, "mps"), t(torch.int32)) == torch.float32  # no fp64
    assert _wide_dtype(t(torch.float64), t(torch.float64, "mps")) == torch.float32


# --- core/patching.py ------------------------------------------------------------------------


def test_patchset_adopts_a_newcomer_and_leaves_it_on_release():
    target = types.ModuleType("target")
    target.f, target.g = "f0", "g0"
    owner = types.SimpleNamespace(hooks=[])
    patches = PatchSet(lambda: [Append(owner, "hooks", "h"), Patch(target, "g", "g1"),
                                Patch(target, "f", "mine")])

    def wrap(present):
        return ("wrapped", present)

    patches.acquire()
    assert patches.adopt(target, "f", wrap) is None  # still this set's own value
    assert patches.adopt(owner, "hooks", wrap) is None  # appends are never adopted
    assert patches.adopt(target, "unknown", wrap) is None
    target.f = "theirs"
    assert patches.adopt(target, "f", wrap) == "theirs"
    assert target.f == ("wrapped", "theirs") and target.g == "g1"
    assert patches.adopt(target, "f", wrap) is None  # the wrapper is now this set's value
    patches.release()
    assert target.f == "theirs" and target.g == "g0" and owner.hooks == []


def test_patchset_adopt_ignores_a_deleted_attribute():
    target = types.ModuleType("target")
    target.f = "f0"
    patches = PatchSet(lambda: [Patch(target, "f", "mine")])
    patches.acquire()
    del target.f
    assert patches.adopt(target, "f", lambda present: ("wrapped", present)) is None
    assert "f" not in vars(target)
    patches.release()
    assert target.f == "f0"


# --- hooks/gate.py: a gate another library replaced while the override holds it -------------


@functools.lru_cache(None)
def _newcomer_gate(index):
    return False  # like Unsloth's: its own rule, cached


def test_status_adopts_a_replaced_gate_once_and_leaves_it_in_place(fake_gpu, monkeypatch):
    import torch._inductor.utils as utils

    monkeypatch.setattr(gate, "_replaced", {})
    monkeypatch.setattr(gate, "_warned_replacements", set())
    original = vars(utils)["is_big_gpu"]
    where = "torch._inductor.utils.is_big_gpu"
    who = f"{__name__}._newcomer_gate"
    try:
        with iso.override(min_sms=40):
            utils.is_big_gpu = _newcomer_gate
            assert utils.is_big_gpu(0) is False and _newcomer_gate.cache_info().currsize == 1
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                assert iso.status()["gate_replaced_by"] == {where: who}
                assert iso.status()["gate_replaced_by"] == {where: who}
            (warning,) = [w for w in caught if "was replaced by" in str(w.message)]
            assert warning.category is RuntimeWarning
            assert str(warning.message) == (
                f"inductor_sm_override: {where} was replaced by {who} (module {__name__}) "
                "while the override held it; the override now wraps that function (it still "
                "answers outside override settings) and leaves it in place when the override "
                "ends")
            assert _newcomer_gate.cache_info().currsize == 0  # its cached answers cleared
            assert utils.is_big_gpu.__wrapped__ is _newcomer_gate
            assert utils.is_big_gpu(0) is True  # 46 SMs >= min_sms=40: the override's rule
        assert utils.is_big_gpu is _newcomer_gate
        assert gate.replacements() == {where: who}
    finally:
        utils.is_big_gpu = original
        _newcomer_gate.cache_clear()


# --- policy/search.py (shared-memory helpers the selector's pruning uses) ---------------------


def test_smem_bytes_counts_every_stage_of_both_tiles_plus_the_barriers():
    from inductor_sm_override.policy.search import SMEM_EXTRA_BYTES, TileConfig, smem_bytes

    assert SMEM_EXTRA_BYTES == 128
    # 3 stages * (64 + 32) rows * 16 deep * 2 bytes + 128
    assert smem_bytes(TileConfig(64, 32, 16, num_stages=3), 2) == 3 * 96 * 16 * 2 + 128
    assert smem_bytes(TileConfig(16, 128, 64, num_stages=1), 4) == 144 * 64 * 4 + 128


def test_device_smem_limit_prefers_the_opt_in_limit(monkeypatch):
    from inductor_sm_override.policy import search

    seen = []

    def props(device):
        seen.append(device)
        return types.SimpleNamespace(**fields)

    monkeypatch.setattr(torch.cuda, "get_device_properties", props)
    fields = {"shared_memory_per_block_optin": 232448, "shared_memory_per_block": 49152}
    assert search.device_smem_limit("cuda:1") == 232448
    assert seen == [torch.device("cuda", 1)]
    fields = {"shared_memory_per_block_optin": 0, "shared_memory_per_block": 49152}
    assert search.device_smem_limit("cuda") == 49152
    fields = {"shared_memory_per_block_optin": None, "shared_memory_per_block": 1}
    assert search.device_smem_limit("cuda") == 1
    fields = {"shared_memory_per_block": 0}
    assert search.device_smem_limit("cuda") is None
    fields = {"shared_memory_per_block_optin": 1.5e5}
    assert search.device_smem_limit("cuda") is None

    def broken(device):
        raise RuntimeError("no CUDA")

    monkeypatch.setattr(torch.cuda, "get_device_properties", broken)
    assert search.device_smem_limit("cuda") is None


# --- hooks/gate.py: torch.cuda.get_device_properties under simulate_sms --------------------------


def test_simulated_cuda_properties_replace_only_the_sm_count():
    real = types.SimpleNamespace(multi_processor_count=132, name="H100", major=9)

    def wrapped(*args, **kwargs):
        assert (args, kwargs) == ((0,), {"x": 1})
        return real

    assert gate._simulated_cuda_properties(wrapped, None, (0,), {"x": 1}) is real
    with iso.override():
        assert gate._simulated_cuda_properties(wrapped, None, (0,), {"x": 1}) is real
    with iso.override(simulate_sms=46):
        props = gate._simulated_cuda_properties(wrapped, None, (0,), {"x": 1})
    assert props.multi_processor_count == 46
    assert props.name == "H100" and props.major == 9
    assert props.__wrapped__ is real
    assert gate._SimulatedProperties(real, 7).multi_processor_count == 7


def test_occupancy_is_limited_by_each_resource_in_turn():
    from inductor_sm_override.policy.search import Problem, TileConfig, occupancy

    bytes1 = Problem(64, 64, 64, itemsize=1)
    # threads: 4 warps = 128 threads -> 1536 // 128 = 12 (registers would allow 15)
    assert occupancy(TileConfig(16, 16, 16, 4, 1), bytes1) == 12
    assert occupancy(TileConfig(16, 16, 16, 3, 1), bytes1) == 16  # 96 threads: the cap
    r = occupancy(TileConfig(16, 16, 16, 5, 1), bytes1)  # 160 threads: 1536 // 160 = 9
    assert r == 9 and isinstance(r, int)
    # registers: 96 threads, 32 + 1024 // 96 = 42 per thread -> 65536 // 4032 = 16
    assert occupancy(TileConfig(16, 64, 16, 3, 1), bytes1) == 16
    # 32 + 2048 // 96 = 53 per thread -> 65536 // 5088 = 12
    r = occupancy(TileConfig(16, 128, 16, 3, 1), bytes1)
    assert r == 12 and isinstance(r, int)
    # one warp: 48 by threads, 51 by registers, 200 by shared memory: the cap of 16
    assert occupancy(TileConfig(16, 16, 16, 1, 1), bytes1) == 16
    # shared memory: 2 stages * 256 * 64 * 2 bytes = 65536 -> 102400 // 65536 = 1
    assert occupancy(TileConfig(128, 128, 64, 4, 2), Problem(64, 64, 64)) == 1
    # no stages parsed: nothing to hold in shared memory, the other limits decide
    assert occupancy(TileConfig(16, 16, 16, 4, 0), bytes1) == 12


def test_estimate_is_waves_times_tile_work_over_efficiency():
    from inductor_sm_override.policy.search import Problem, TileConfig, estimate

    # 3 * 4 * 4 = 48 tiles, 0 SMs counted as 1, 16 resident -> 3 waves; work 16*16*4*16;
    # efficiency (256 / 32) / 96
    assert estimate(TileConfig(16, 16, 16, 1, 1), Problem(64, 64, 64, batch=3, itemsize=1, sms=0)) \
        == pytest.approx(3 * 16384 * 12)
    assert estimate(TileConfig(16, 16, 16, 1, 1), Problem(64, 64, 64, itemsize=1, sms=0)) \
        == pytest.approx(16384 * 12)
    # K = 100 padded to 7 * 16
    assert estimate(TileConfig(16, 16, 16, 1, 1), Problem(64, 64, 100, itemsize=1, sms=1)) \
        == pytest.approx(16 * 16 * 7 * 16 * 12)
    # intensity 128 > 96: efficiency is capped at 1
    assert estimate(TileConfig(256, 256, 16, 8, 1), Problem(512, 512, 64, itemsize=1, sms=4)) \
        == pytest.approx(256 * 256 * 64)


def test_problem_from_reads_get_size_first_and_falls_back_to_size():
    from inductor_sm_override.policy.search import Problem, problem_from

    def node(*size):
        return types.SimpleNamespace(get_size=lambda: list(size))

    a, b = node(2, 64, 48), node(2, 48, 32)
    layout = types.SimpleNamespace(get_size=lambda: [2, 64, 32], dtype=torch.float32)
    assert problem_from(layout, [a, b], 7) == Problem(m=64, n=32, k=48, batch=2, itemsize=4, sms=7)
    sized = types.SimpleNamespace(size=(64, 32))  # no get_size, no dtype
    assert problem_from(sized, [a, b], 7) == Problem(m=64, n=32, k=48, batch=1, itemsize=2, sms=7)
    assert problem_from(None, [a, b], 7) is None


def test_problem_from_needs_an_input_whose_last_dim_is_n():
    from inductor_sm_override.policy.search import Problem, problem_from

    def node(*size):
        return types.SimpleNamespace(get_size=lambda: list(size))

    def symbolic():
        raise TypeError("symbolic size")

    layout = types.SimpleNamespace(size=(64, 32))
    assert problem_from(layout, [node(64, 48), node(48, 16)], 1) is None  # no input ends in N
    assert problem_from(layout, [node(64, 48)], 1) is None
    # a symbolic input and a 1-d one are skipped, not read
    odd = types.SimpleNamespace(get_size=symbolic)
    found = problem_from(layout, [node(64, 48), node(48, 32), odd, node(32)], 1)
    assert found == Problem(m=64, n=32, k=48, sms=1)


def test_parse_config_defaults_warps_and_stages_and_needs_all_three_blocks():
    from inductor_sm_override.policy.search import TileConfig, parse_config

    def choice(text):
        return types.SimpleNamespace(description=text)

    assert parse_config(choice("BLOCK_M=16, BLOCK_N=32, BLOCK_K=64")) == TileConfig(16, 32, 64)
    assert parse_config(choice("BLOCK_K: 64 BLOCK_N: 32 BLOCK_M: 16 num_stages=3")) \
        == TileConfig(16, 32, 64, num_warps=4, num_stages=3)
    assert parse_config(choice("BLOCK_M=16, BLOCK_N=32, num_warps=8")) is None
    assert parse_config(choice("BLOCK_M=16, BLOCK_N=32, BLOCK_K=64, num_warps=8")) \
        == TileConfig(16, 32, 64, num_warps=8, num_stages=2)
    assert parse_config(object()) is None  # no description at all
    assert parse_config(choice(None)) is None


def test_describe_names_module_and_qualified_name():
    class Holder:
        def method(self):
            pass

    assert gate._describe(Holder.method) == (
        f"{__name__}.test_describe_names_module_and_qualified_name.<locals>.Holder.method")
    assert gate._describe(types.SimpleNamespace(__module__="m", __name__="plain")) == "m.plain"
    assert gate._describe(types.SimpleNamespace(__module__="m")) == "m"
    assert gate._describe(object()) == "?"


def test_adopt_replacements_looks_at_every_site(monkeypatch):
    monkeypatch.setattr(gate, "_replaced", {})
    monkeypatch.setattr(gate, "_warned_replacements", set())
    first, second = types.ModuleType("site_a"), types.ModuleType("site_b")
    newcomer = object()  # no module, no name: described as "?"
    calls = []

    class Patches:
        def adopt(self, site, name, wrap):
            calls.append((site, name))
            return newcomer if site is second else None

    plan = types.SimpleNamespace(sites=(first, second))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert gate.adopt_replacements(plan, Patches()) == {"site_b.is_big_gpu": "?"}
        assert gate.adopt_replacements(plan, Patches()) == {"site_b.is_big_gpu": "?"}
    assert calls == [(first, "is_big_gpu"), (second, "is_big_gpu")] * 2
    (warning,) = [w for w in caught if "was replaced by" in str(w.message)]
    assert str(warning.message).startswith(
        "inductor_sm_override: site_b.is_big_gpu was replaced by ? (module ?) while the override")


# --- checks/verify.py: default tolerances off the table, the failure outcomes in full ----------


def test_default_tolerances_of_dtypes_outside_the_table():
    from inductor_sm_override.checks.verify import DEFAULT_TOLERANCES, EXACT, default_tolerances

    assert default_tolerances(torch.bool) == EXACT
    assert default_tolerances(torch.int16) == EXACT
    assert default_tolerances(torch.complex64) == DEFAULT_TOLERANCES["float32"]
    assert default_tolerances(torch.float16, 4096) == (2e-2, pytest.approx(4e-2))


def test_compare_failures_report_every_field():
    from inductor_sm_override.checks.verify import Check, compare

    nan = float("nan")
    assert compare(torch.tensor([nan, 1.0]), torch.tensor([1.0, 1.0]), rtol=0.1, atol=0.5) == Check(
        False, math.inf, math.inf, 0.1, 0.5, "1 NaN/Inf values where the reference is finite")
    # the reference's Inf is not reproduced; the finite element is 0.5 off, RMS of [2.0] is 2
    assert compare(torch.tensor([1.0, 2.5]), torch.tensor([math.inf, 2.0]), rtol=0.1,
                   atol=1.0) == Check(False, 0.5, 0.25, 0.1, 1.0,
                                      "non-finite reference values not reproduced")
    over = compare(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 2.0]), rtol=0.0, atol=0.5)
    assert over == Check(False, 1.0, pytest.approx(1 / math.sqrt(2.5)), 0.0, 0.5,
                         "1 of 2 values off by up to 1 (atol 0.5, rtol 0)")
    same = compare(torch.tensor([1.0, math.inf, nan]), torch.tensor([1.0, math.inf, nan]), rtol=0.0,
                   atol=0.0)
    assert same == Check(True, 0.0, 0.0, 0.0, 0.0)


def test_compare_adds_the_slack_in_the_comparison_dtype():
    from inductor_sm_override.checks.verify import compare

    a, e, nan = torch.tensor([2.0, 5.0]), torch.tensor([1.0, 5.0]), float("nan")
    # float32 arithmetic: 1 - 1e-12 rounds to 1.0, which covers the error of 1.0
    slack = torch.tensor([1.0 - 1e-12, 0.0], dtype=torch.float64)
    assert compare(a, e, rtol=0.0, atol=0.0, slack=slack).passed
    assert not compare(a, e, rtol=0.0, atol=0.0, slack=torch.tensor([0.5, 0.0])).passed
    assert compare(a, e, rtol=0.0, atol=0.0, slack=torch.tensor([nan, 0.0])).max_abs == 1.0
    assert not compare(a, e, rtol=0.0, atol=0.0, slack=torch.tensor([nan, 0.0])).passed


# --- core/settings.py: near misses ----------------------------------------------------------


def test_edit_distance_counts_a_deletion_as_one():
    assert _edits("ab", "a") == 1
    assert _edits("abcd", "abd") == 1 and _edits("abcd", "bc") == 2


def test_near_misses_by_either_fragment_and_up_to_two_edits():
    # a zero for an O: only one of the fragments INDUCTORSM and SMOVER is still there
    assert near_misses({"INDUCTOR_SM_0VERRIDE": "1"}) == {
        "INDUCTOR_SM_0VERRIDE": "INDUCTOR_SM_OVERRIDE"}
    assert near_misses({"INDUCT0R_SM_OVERRIDE": "1"}) == {
        "INDUCT0R_SM_OVERRIDE": "INDUCTOR_SM_OVERRIDE"}
    # compared in upper case: the lower-case name is one edit from MIN_SMS
    assert near_misses({"inductor_sm_override_minsms": "1"}) == {
        "inductor_sm_override_minsms": "INDUCTOR_SM_OVERRIDE_MIN_SMS"}
    assert near_misses({"INDUCTOR_SM_OVERIDE_MIN_SM": "1"}) == {
        "INDUCTOR_SM_OVERIDE_MIN_SM": "INDUCTOR_SM_OVERRIDE_MIN_SMS"}  # two edits
    assert near_misses({"INDUCTOR_SM_OVRIDE_MIN_SM": "1"}) == {}  # three
    line = near_miss_line({"inductor_sm_override": "1", "INDUCTOR_SM_OVERIDE_MIN_SM": "1"})
    assert line == ("inductor_sm_override is not a variable of this package (ignored): did you "
                    "mean INDUCTOR_SM_OVERRIDE?; INDUCTOR_SM_OVERIDE_MIN_SM is not a variable of "
                    "this package (ignored): did you mean INDUCTOR_SM_OVERRIDE_MIN_SMS?")


# --- hooks/gate.py: the gate wrapper and build_patches ----------------------------------------


def _recording_gate(plan):
    import wrapt

    calls = []

    def torch_gate(*args, **kwargs):
        calls.append((args, kwargs))
        return "torch's answer"

    return wrapt.FunctionWrapper(torch_gate, gate._make_gate(plan)), calls


def test_the_gate_defers_to_torch_with_the_same_arguments(fake_gpu, monkeypatch):
    from inductor_sm_override.torch_plan import compat

    wrapped, calls = _recording_gate(compat.current_plan())
    assert wrapped(3, flag=1) == "torch's answer"  # outside override settings
    monkeypatch.setattr(torch.version, "hip", "6.0")
    with iso.override(min_sms=40):
        assert wrapped(2, flag=0) == "torch's answer"  # ROCm: torch's own rule
    assert calls == [((3,), {"flag": 1}), ((2,), {"flag": 0})]


def test_the_gate_judges_the_device_it_is_asked_about(tmp_path, monkeypatch):
    from inductor_sm_override.testing import fake_cuda_device
    from inductor_sm_override.torch_plan import compat, hardware

    monkeypatch.setattr(gate, "_logged", set())
    monkeypatch.setattr(hardware, "_warned", set())
    path = tmp_path / "r.jsonl"
    with fake_cuda_device(46, major=7, minor=5, count=3, name="Tesla T4"):
        wrapped, calls = _recording_gate(compat.current_plan())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with iso.override(min_sms=40, report=str(path)):
                assert wrapped(1) is True
                assert wrapped(device=2) is True
    assert calls == []
    gates = [json.loads(line) for line in path.read_text().splitlines()]
    gates = [e for e in gates if e.get("event") == "gate"]
    assert [(e["device"], e["sms"], e["threshold"], e["torch_threshold"], e["answer"])
            for e in gates] == [("cuda:1", 46, 40, 68, True), ("cuda:2", 46, 40, 68, True)]
    notes = [w for w in caught if "Tesla T4 is sm_75" in str(w.message)]
    assert len(notes) == 2  # pre-Ampere: one warning per device asked about


def test_build_patches_wraps_what_each_site_holds(monkeypatch):
    def torch_gate(*args):
        return "torch"

    def other_gate(*args):
        return "other"

    site_a, site_b, site_c, site_d = (types.ModuleType(n) for n in "abcd")
    site_a.is_big_gpu, site_b.is_big_gpu, site_d.is_big_gpu = torch_gate, other_gate, 3

    class Props:
        create = staticmethod(lambda device: types.SimpleNamespace(type="cuda",
                                                                  multi_processor_count=132))

    class Owner:
        get_max_num_sms = staticmethod(lambda: 132)

    def cuda_props(device):
        return types.SimpleNamespace(multi_processor_count=132, name="H100")

    monkeypatch.setattr(torch.cuda, "get_device_properties", cuda_props)
    plan = types.SimpleNamespace(gate=torch_gate, sites=(site_a, site_b, site_c, site_d),
                                 device_properties=Props, max_sms_owner=Owner)
    patches = gate.build_patches(plan)
    assert [(p.target, p.name) for p in patches] == [
        (torch.cuda, "get_device_properties"), (site_a, "is_big_gpu"), (site_b, "is_big_gpu"),
        (site_c, "is_big_gpu"), (site_d, "is_big_gpu"), (Props, "create"),
        (Owner, "get_max_num_sms")]
    cuda, a, b, c, d, create, max_sms = (p.new for p in patches)
    assert cuda.__wrapped__ is cuda_props and create.__wrapped__ is vars(Props)["create"]
    assert max_sms.__wrapped__ is vars(Owner)["get_max_num_sms"]
    assert a.__wrapped__ is torch_gate and b.__wrapped__ is other_gate
    assert c is a and d is a  # no gate there (or not a function): one wrapper of plan.gate
    assert (a(0), b(0), cuda(0).multi_processor_count, max_sms()) == ("torch", "other", 132, 132)
    with iso.override(simulate_sms=20):
        assert cuda(0).multi_processor_count == 20 and cuda(0).name == "H100"
        assert max_sms() == 20
    bare = types.SimpleNamespace(gate=torch_gate, sites=(site_a,), device_properties=None,
                                 max_sms_owner=None)
    assert [(p.target, p.name) for p in gate.build_patches(bare)] == [(site_a, "is_big_gpu")]
    monkeypatch.delattr(torch.cuda, "get_device_properties")
    assert next((p.target, p.name) for p in gate.build_patches(plan)) == (site_a, "is_big_gpu")


def test_clear_caches_clears_every_cached_answer():
    @functools.lru_cache(None)
    def torch_gate(index):
        return True

    @functools.lru_cache(None)
    def other_gate(index):
        return False

    @functools.lru_cache(None)
    def create(cls, device):
        return device

    @functools.lru_cache(None)
    def get_max_num_sms():
        return 46

    def plain(index):
        return True

    site_a, site_b, site_c = (types.ModuleType(n) for n in "abc")
    site_a.is_big_gpu, site_b.is_big_gpu, site_c.is_big_gpu = torch_gate, other_gate, plain

    class Props:
        pass

    Props.create = classmethod(create)
    owner = types.SimpleNamespace(get_max_num_sms=get_max_num_sms)
    plan = types.SimpleNamespace(gate=torch_gate, sites=(site_a, site_b, site_c),
                                 device_properties=Props, max_sms_owner=owner)
    for cached in (torch_gate, other_gate):
        cached(0)
    Props.create(0)
    get_max_num_sms()
    gate.clear_caches(plan)
    assert [f.cache_info().currsize for f in (torch_gate, other_gate, create, get_max_num_sms)] \
        == [0, 0, 0, 0]
    torch_gate(0)
    gate.clear_caches(types.SimpleNamespace(gate=None, sites=(site_a,), device_properties=None,
                                            max_sms_owner=None))
    assert torch_gate.cache_info().currsize == 0  # what the site holds, even without plan.gate


# --- core/patching.py -------------------------------------------------------------------------


def test_a_failing_edge_is_logged_with_its_traceback_and_never_raises(caplog):
    def broken():
        raise RuntimeError("cache gone")

    owner = types.SimpleNamespace(hooks=[])
    patches = PatchSet(lambda: [Append(owner, "hooks", "mine")], broken)
    caplog.set_level(logging.DEBUG, logger="inductor_sm_override")
    patches.acquire()
    assert owner.hooks == ["mine"]
    del owner.hooks  # someone removed the hook list meanwhile: nothing to take out
    patches.release()
    assert not patches.installed and patches.count == 0
    failed = [r for r in caplog.records if r.getMessage() == "cache clearing failed"]
    assert len(failed) == 2 and all(r.levelno == logging.DEBUG for r in failed)
    assert all(r.exc_info and r.exc_info[0] is RuntimeError for r in failed)


def test_validate_field_refuses_numbers_as_text_and_lists_the_known_fields():
    from inductor_sm_override.core.settings import _FIELDS, validate_field

    with pytest.raises(SettingsError) as text:
        validate_field("rtol", "0.1")
    assert str(text.value) == "rtol='0.1' is not accepted: expected a finite number >= 0 or None"
    assert validate_field("rtol", 1) == 1.0
    with pytest.raises(SettingsError) as unknown:
        validate_field("min_sm", 1)
    assert str(unknown.value) == f"unknown setting 'min_sm'; known settings: {', '.join(_FIELDS)}"


def test_merging_an_empty_layer_keeps_the_same_settings():
    settings = Settings(min_sms=40)
    assert settings.merged({}) is settings
    assert settings.merged({"rtol": 0.5}) == Settings(min_sms=40, rtol=0.5)


# --- hooks/selector.py: _check on its own (a crash in it only rejects the choice in a compile)


def _autotune_args(inputs, out):
    return types.SimpleNamespace(extern=types.SimpleNamespace(input_tensors=inputs,
                                                              output_tensor=out))


def test_check_judges_the_output_window_against_the_reference_computed_once():
    from inductor_sm_override.checks.verify import compare
    from inductor_sm_override.core.records import OpRecord
    from inductor_sm_override.hooks import selector

    torch.manual_seed(0)
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    out = a @ b
    args = _autotune_args([a, b], out)
    record = OpRecord(name="mm", settings=Settings(rtol=0.0, atol=1e-3))
    assert selector._check(record, args, "good") is None
    good = record.checks["good"]
    assert (good["passed"], good["reference"]) == (True, "fp64")
    assert (good["rtol"], good["atol"]) == (0.0, 1e-3)
    assert record.references[id(args)][0] is args and list(record.references) == [id(args)]
    expected = record.references[id(args)][1][0]
    out.add_(1.0)
    reason = selector._check(record, args, "bad")
    assert reason.startswith("mismatch vs fp64: 32 of 32 values off by up to 1")
    assert record.references[id(args)][1][0] is expected  # not computed again
    # bf16 with K = 4096: the default atol grows with sqrt(K / 1024)
    a16 = torch.randn(4, 4096, dtype=torch.bfloat16)
    b16 = torch.randn(4096, 4, dtype=torch.bfloat16)
    out16, ref = a16 @ b16, a16.double() @ b16.double()
    rec16 = OpRecord(name="mm", settings=Settings())
    assert selector._check(rec16, _autotune_args([a16, b16], out16), "k") is None
    assert rec16.checks["k"]["atol"] == pytest.approx(compare(out16, ref, None, None, 4096).atol)
    assert rec16.checks["k"]["atol"] > compare(out16, ref, None, None, None).atol


def test_check_without_a_reference_or_a_readable_output():
    from inductor_sm_override.core.records import OpRecord
    from inductor_sm_override.hooks import selector

    a, b = torch.ones(2, 3), torch.ones(3, 2)
    record = OpRecord(name="addmm", settings=Settings())  # no extern, no fp64 evaluation
    assert selector._check(record, _autotune_args([a, b], a @ b), "t") is None
    assert record.unverified == {"t": "no reference"}
    assert record.checks == {"t": {"passed": None, "reason": "no reference"}}

    class Unreadable:
        shape, dtype = (2, 2), torch.float32

        def __getattr__(self, name):
            raise RuntimeError("x" * 400)

    class Gone:
        @property
        def output_tensor(self):
            raise RuntimeError("y" * 400)

    args = types.SimpleNamespace(extern=Gone())
    mm = OpRecord(name="mm", settings=Settings())
    mm.references[id(args)] = (args, (a @ b, "fp64"))
    reason = selector._check(mm, args, "t")
    assert reason == ("could not read its output: RuntimeError: " + "y" * 400)[:300]
    broken = _autotune_args([a, b], Unreadable())
    mm.references[id(broken)] = (broken, (a @ b, "fp64"))
    reason = selector._check(mm, broken, "u")
    assert reason == ("verification failed: RuntimeError: " + "x" * 400)[:300]
    assert "u" not in mm.checks


def test_tag_records_what_was_kept_and_notes_a_choice_it_cannot_tag():
    from inductor_sm_override.core.records import TAG, OpRecord
    from inductor_sm_override.hooks import selector

    record = OpRecord(name="mm", settings=Settings())
    taggable, fixed = types.SimpleNamespace(), object()  # object() takes no attributes
    kept = [taggable, fixed]
    names = {id(taggable): "triton_1", id(fixed): "extern_mm"}
    assert selector._tag(record, kept, names) is kept
    assert record.kept == ["triton_1", "extern_mm"]
    assert record.kept_choices == kept and record.kept_choices is not kept
    assert getattr(taggable, TAG) is record
    assert record.notes == ["could not tag extern_mm"]


# --- hooks/selector.py: _check_sole (a sole or unbenchmarked template gets a reference) -------


def _sole_case(name="mm", templates=2, verified=True):
    """Templates of an op with the selector call's inputs bound (so ``_reference`` finds the
    toolkit's extern), and a fresh record for them."""
    from selector_harness import Template

    from inductor_sm_override.core.records import OpRecord

    def make(inputs, layout):
        kept = [Template(f"t{i}", inputs, layout) for i in range(templates)]
        record = OpRecord(name=name, settings=Settings(), gemm=True, verified_op=verified)
        return record, kept, {id(c): c.name for c in kept}

    return make


@pytest.fixture
def sole_call():
    """The selector call's (input_nodes, layout) for an mm, as ``_selector_call`` binds it."""
    from selector_harness import lowering

    from inductor_sm_override.hooks import selector

    with lowering() as (a, b, layout):
        token = selector._CALL.set(([a, b], layout))
        try:
            yield [a, b], layout
        finally:
            selector._CALL.reset(token)


CHECKED_HERE = ("checked here against the reference {} added by the toolkit, which is used "
                "only if no template passes its check")


def test_check_sole_adds_the_reference_before_a_sole_template(sole_call):
    from inductor_sm_override.hooks import selector

    record, kept, names = _sole_case(templates=1)(*sole_call)
    result = selector._check_sole(record, kept, names)
    reference = result[0]
    assert result[1:] == kept and selector.is_reference(reference)
    assert record.externs == [reference] and record.reference_added == names[id(reference)]
    assert record.notes == ["sole choice: " + CHECKED_HERE.format(record.reference_added)]


def test_check_sole_leaves_benchmarked_fp64_checked_templates_and_unverified_ops(
        sole_call, monkeypatch):
    import torch._inductor.config as config

    from inductor_sm_override.hooks import selector

    record, kept, names = _sole_case(templates=2)(*sole_call)  # mm: checked against fp64
    assert selector._check_sole(record, kept, names) is kept
    monkeypatch.delattr(config, "deterministic")  # a torch without the setting: not on
    assert selector._check_sole(record, kept, names) is kept
    assert record.notes == [] and record.reference_added is None
    monkeypatch.undo()
    for count in (1, 2):  # an op not verified: nothing is added, even for a sole template
        record, kept, names = _sole_case(templates=count, verified=False)(*sole_call)
        assert selector._check_sole(record, kept, names) is kept
        assert record.notes == [] and record.externs == []
    record, _, names = _sole_case()(*sole_call)
    assert selector._check_sole(record, [], names) == []  # nothing kept: nothing to check
    assert record.notes == [] and record.externs == []


def test_check_sole_in_deterministic_mode_puts_the_reference_first(sole_call):
    import torch._inductor.config as config

    from inductor_sm_override.hooks import selector

    record, kept, names = _sole_case(templates=2)(*sole_call)
    with config.patch(deterministic=True):
        result = selector._check_sole(record, kept, names)
    assert result[1:] == kept and result[0] is record.externs[0]
    assert record.notes == [f"deterministic mode (no benchmarking): the reference "
                            f"{record.reference_added} added by the toolkit replaces the "
                            "templates"]


def test_check_sole_of_templates_without_extern_in_an_op_without_fp64(monkeypatch):
    from selector_harness import gemm
    from torch._inductor.virtualized import V

    from inductor_sm_override.hooks import selector

    with gemm("addmm") as (inputs, layout, _extern):
        # the reference for addmm reads alpha/beta off the FX node being lowered
        node = torch.fx.Graph().call_function(torch.ops.aten.addmm.default, ())
        monkeypatch.setattr(V.graph, "current_node", node)
        token = selector._CALL.set((inputs, layout))
        try:
            record, kept, names = _sole_case("addmm", templates=2)(inputs, layout)
            result = selector._check_sole(record, kept, names)
        finally:
            selector._CALL.reset(token)
    assert result[1:] == kept and record.reference_added == names[id(result[0])]
    assert record.notes == ["no extern choice: " + CHECKED_HERE.format(record.reference_added)]


def test_check_sole_without_a_reference_notes_only_a_sole_template():
    from selector_harness import lowering

    from inductor_sm_override.hooks import selector

    with lowering() as (a, b, layout):  # no selector call bound: no reference to add
        record, kept, names = _sole_case(templates=1)([a, b], layout)
        assert selector._check_sole(record, kept, names) is kept
        assert record.notes == ["sole choice: no reference for mm on this rank; taken without "
                                "a check (unverified)"]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(selector, "FP64_CHECKED", frozenset())  # two templates, no fp64
            record, kept, names = _sole_case(templates=2)([a, b], layout)
            assert selector._check_sole(record, kept, names) is kept
            assert record.notes == [] and record.reference_added is None


# --- hooks/selector.py: the get_inputs / generate_example_value wrappers ----------------------


def _recorder(value=None):
    """A stand-in for torch's method: records each call and the draws state it ran under."""
    from inductor_sm_override.hooks import selector

    calls = []

    def wrapped(*args, **kwargs):
        draws = selector._DRAWS.get()
        calls.append((args, kwargs, None if draws is None else list(draws)))
        return value

    return wrapped, calls


def test_get_inputs_counts_draws_from_zero_for_a_verified_op_by_keyword_or_position():
    from inductor_sm_override.core.records import TAG, OpRecord
    from inductor_sm_override.hooks import selector

    record = OpRecord(name="mm", settings=Settings(), gemm=True, verified_op=True)
    tagged = types.SimpleNamespace(**{TAG: record})
    choices = [types.SimpleNamespace(), tagged]
    wrapped, calls = _recorder("inputs")
    # torch passes choices by keyword or by position, with further keyword arguments
    assert selector._get_inputs(wrapped, None, (), {"choices": choices, "x": 1}) == "inputs"
    assert selector._get_inputs(wrapped, None, (choices,), {"x": 2}) == "inputs"
    assert calls == [((), {"choices": choices, "x": 1}, [record, 0]),
                     ((choices,), {"x": 2}, [record, 0])]
    assert selector._DRAWS.get() is None


def test_get_inputs_passes_untagged_and_unverified_choices_through_with_every_argument():
    from inductor_sm_override.core.records import TAG, OpRecord
    from inductor_sm_override.hooks import selector

    wrapped, calls = _recorder("inputs")
    untagged = [types.SimpleNamespace()]
    assert selector._get_inputs(wrapped, None, (), {"choices": untagged, "x": 1}) == "inputs"
    unverified = OpRecord(name="mm", settings=Settings(), gemm=True, verified_op=False)
    other = [types.SimpleNamespace(**{TAG: unverified})]
    assert selector._get_inputs(wrapped, None, (other,), {"x": 2}) == "inputs"
    assert calls == [((), {"choices": untagged, "x": 1}, None), ((other,), {"x": 2}, None)]


def test_generate_example_value_reseeds_each_draw_from_the_op_and_its_index():
    from inductor_sm_override.checks.inputs import op_seed, reseed
    from inductor_sm_override.core.records import OpRecord
    from inductor_sm_override.hooks import selector

    record = OpRecord(name="mm", settings=Settings())
    record.shapes, record.dtypes = [[4, 4], [4, 4]], ["torch.float32", "torch.float32"]
    draws = [record, 0]
    token = selector._DRAWS.set(draws)
    seen = []

    def draw(*args, **kwargs):
        seen.append((args, kwargs))
        return torch.zeros(4, 4)

    try:
        values = [selector._generate_example_value(draw, None, ((4, 4),),
                                                   {"dtype": torch.float32}) for _ in range(2)]
    finally:
        selector._DRAWS.reset(token)
    assert draws[1] == 2 and seen == [(((4, 4),), {"dtype": torch.float32})] * 2
    for index, value in enumerate(values):
        expected = reseed(torch.zeros(4, 4), op_seed("mm", record.shapes, record.dtypes, index))
        assert torch.equal(value, expected)
    assert not torch.equal(values[0], values[1])
    # outside a verified op's get_inputs: torch's value, the keyword arguments passed on
    wrapped, calls = _recorder("value")
    assert selector._generate_example_value(wrapped, None, (1,), {"dtype": torch.int8}) == "value"
    assert calls == [((1,), {"dtype": torch.int8}, None)]


def test_generate_example_value_keeps_torch_draw_when_it_cannot_be_refilled():
    from inductor_sm_override.core.records import OpRecord
    from inductor_sm_override.hooks import selector

    class Odd:
        @property
        def is_mkldnn(self):
            raise RuntimeError("q" * 300)

    record = OpRecord(name="mm", settings=Settings())
    value = Odd()
    token = selector._DRAWS.set([record, 0])
    try:
        assert selector._generate_example_value(lambda: value, None, (), {}) is value
    finally:
        selector._DRAWS.reset(token)
    assert record.notes == [f"inputs: torch's draw kept (RuntimeError('{'q' * 300}'))"[:200]]


# --- hooks/selector.py: preprocess (externs first, max_choices, smem, budget, fallbacks) ------


@contextlib.contextmanager
def _preprocessing(record=None, call=None, **settings):
    """``preprocess`` as the ``__call__`` wrapper runs it: settings in force, the op's record
    (None: not opened) and the selector call's (input_nodes, layout) bound."""
    from inductor_sm_override.hooks import selector

    with iso.override(**settings):
        if record is not None:
            record.settings = state.current()
        op_token, call_token = selector._CURRENT_OP.set(record), selector._CALL.set(call)
        try:
            yield selector.preprocess
        finally:
            selector._CALL.reset(call_token)
            selector._CURRENT_OP.reset(op_token)


def _gemm_record(**fields):
    from inductor_sm_override.core.records import OpRecord

    fields = {"gemm": True, "verified_op": True, **fields}
    return OpRecord(name="mm", settings=Settings(), **fields)


def test_preprocess_without_an_open_op_treats_it_as_a_verified_gemm(monkeypatch):
    from selector_harness import Template, extern, lowering

    from inductor_sm_override.core import records
    from inductor_sm_override.core.records import TAG

    seen = []

    def shared_decision(record, choices):  # the fleet's filter: sees the op's record
        seen.append(record)
        return choices[:-1]

    monkeypatch.setattr(records, "choice_filters", [shared_decision])
    with lowering() as (a, b, layout):
        ref, t0, t1 = extern(a, b, layout), Template("t0", [a, b], layout), \
            Template("t1", [a, b], layout)
        with _preprocessing(budget_s=100.0) as preprocess:
            settings, budget = state.current(), state.current_budget()
            kept = preprocess([ref, t0, t1])
    record = getattr(kept[0], TAG)
    assert kept == [ref, t0] and seen == [record]
    assert (record.name, record.gemm, record.verified_op) == ("?", True, True)
    assert record.settings is settings and record.budget is budget is not None
    assert record.reserved_s == 1.0  # one template + the extern at the prior cost


def test_preprocess_only_tags_an_op_outside_the_gemm_family():
    from inductor_sm_override.core.records import TAG, OpRecord

    record = OpRecord(name="flex_attention", settings=Settings())
    choices = [types.SimpleNamespace(name="a"), types.SimpleNamespace(name="b")]
    with _preprocessing(record, max_choices=0) as preprocess:
        kept = preprocess(choices)
    assert kept == choices and record.kept == ["a", "b"] and record.dropped == {}
    assert all(getattr(c, TAG) is record for c in choices)


def test_preprocess_ranks_for_one_sm_when_the_device_count_is_unknown():
    from selector_harness import Template, lowering

    with lowering(size=128) as (a, b, layout):
        wide = Template("wide", [a, b], layout, bm=16, bn=64, bk=16)
        narrow = Template("narrow", [a, b], layout, bm=16, bn=32, bk=16)
        # fp32 128^3: on 1 SM the 16x32 tile is faster, on 2 SMs the 16x64 one (estimate)
        with _preprocessing(_gemm_record(verified_op=False)) as preprocess:
            assert [c.name for c in preprocess([wide, narrow])] == ["narrow", "wide"]
        with _preprocessing(_gemm_record(verified_op=False, sms=2)) as preprocess:
            assert [c.name for c in preprocess([wide, narrow])] == ["wide", "narrow"]
        bare = types.SimpleNamespace(name="bare", layout=layout)  # no input_nodes: no problem
        with _preprocessing(_gemm_record(verified_op=False)) as preprocess:
            assert preprocess([bare, wide]) == [bare, wide]


def test_preprocess_drops_templates_whose_shared_memory_cannot_fit(fake_gpu):
    from selector_harness import Template, extern, lowering

    with lowering() as (a, b, layout):
        ref = extern(a, b, layout)
        big = Template("big", [a, b], layout, bm=256, bn=256, bk=128, stages=4)
        small = Template("small", [a, b], layout)
        record = _gemm_record(device="cuda:0", sms=46)
        with _preprocessing(record) as preprocess:
            assert preprocess([big, ref, small]) == [ref, small]
    assert record.dropped == {"big": "smem"}
    assert record.notes[0].startswith("shared memory: 1 templates need more than the device's ")


def test_preprocess_keeps_what_the_budget_allows_when_it_decides_there():
    from selector_harness import Template, extern, lowering

    with lowering() as (a, b, layout):
        ref = extern(a, b, layout)
        templates = [Template(f"t{i}", [a, b], layout) for i in range(3)]
        record = _gemm_record(budget=Budget(2.0))  # first op: 1 s of 2 -> one template
        with _preprocessing(record, max_choices=3) as preprocess:
            assert preprocess([ref, *templates]) == [ref, templates[0]]
    assert record.dropped == {"t1": "budget", "t2": "budget"}
    assert record.reserved_s == 1.0 and record.budget.reserved == 1.0


def test_preprocess_of_a_budget_deciding_at_benchmark_drops_templates_only_when_spent():
    from selector_harness import Template, extern, lowering

    with lowering() as (a, b, layout):
        ref = extern(a, b, layout)
        templates = [Template(f"t{i}", [a, b], layout) for i in range(2)]
        for spent, expected in ((1.0, [ref]), (0.5, [ref, *templates])):
            budget = Budget(1.0)
            budget.spent = spent  # remaining 0 (spent), then 0.5 s (not yet)
            record = _gemm_record(budget=budget, budget_at_benchmark=True)
            with _preprocessing(record) as preprocess:
                assert preprocess([ref, *templates]) == expected
            assert record.dropped == ({"t0": "budget", "t1": "budget"} if spent == 1.0 else {})
            assert record.reserved_s == 0.0 and budget.reserved == 0.0


def test_preprocess_with_no_template_allowed_and_no_extern(sole_call):
    from selector_harness import Template

    from inductor_sm_override.hooks import selector

    inputs, layout = sole_call
    t0, t1 = Template("t0", inputs, layout), Template("t1", inputs, layout)
    record = _gemm_record()
    with _preprocessing(record, call=sole_call, max_choices=0) as preprocess:
        kept = preprocess([t0, t1])  # the toolkit's reference replaces them
    assert len(kept) == 1 and selector.is_reference(kept[0]) and record.externs == kept
    assert record.dropped == {"t0": "cap", "t1": "cap"}
    assert record.notes == [f"no template allowed and no extern choice: the reference "
                            f"{record.kept[0]} added by the toolkit is used instead"]
    record = _gemm_record()
    with _preprocessing(record, max_choices=0) as preprocess:  # no reference: the best stays
        assert preprocess([t0, t1]) == [t0]
    assert record.dropped == {"t1": "cap"}
    assert record.notes == ["no extern choice: the best-ranked template was kept",
                            "sole choice: no reference for mm on this rank; taken without a "
                            "check (unverified)"]


# --- hooks/selector.py: _check of a subgraph choice (decompose_k) and K per op ----------------


def test_check_of_a_subgraph_choice_judges_what_its_subgraph_returns_not_the_window():
    from torch._inductor.codegen.subgraph import SubgraphChoiceCaller

    from inductor_sm_override.core.records import OpRecord
    from inductor_sm_override.hooks import selector

    torch.manual_seed(0)
    a, b = torch.randn(8, 16), torch.randn(16, 4)

    def subgraph(result):  # benchmarked as extern, never writes out (decompose_k)
        choice = SubgraphChoiceCaller.__new__(SubgraphChoiceCaller)
        choice._compiled_module = types.SimpleNamespace(call=lambda inputs: [result])
        choice.sym_input_values = ()
        return choice

    for window, returned, passed in ((torch.zeros(8, 4), a @ b, True),
                                     (a @ b, a @ b + 1.0, False)):
        record = OpRecord(name="mm", settings=Settings())
        reason = selector._check(record, _autotune_args([a, b], window), "dk", subgraph(returned))
        assert (reason is None) is passed and record.checks["dk"]["passed"] is passed


def test_check_of_addmm_scales_the_tolerance_with_k_of_mat1_not_the_bias_width():
    from inductor_sm_override.checks.verify import compare
    from inductor_sm_override.core.records import OpRecord
    from inductor_sm_override.hooks import selector

    torch.manual_seed(0)
    bias = torch.randn(4, 4, dtype=torch.bfloat16)
    a = torch.randn(4, 4096, dtype=torch.bfloat16)
    b = torch.randn(4096, 4, dtype=torch.bfloat16)
    out = torch.addmm(bias, a, b)
    args = _autotune_args([bias, a, b], out)
    record = OpRecord(name="addmm", settings=Settings())
    record.references[id(args)] = (args, (out.clone(), "extern addmm"))
    assert selector._check(record, args, "t") is None
    assert record.checks["t"]["atol"] == pytest.approx(compare(out, out, None, None, 4096).atol)
    assert record.checks["t"]["atol"] > compare(out, out, None, None, 4).atol
