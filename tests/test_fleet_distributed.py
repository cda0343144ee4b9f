"""Distributed autotuning inside a verified block, 2 ranks under torch.distributed.run
(gloo, CPU): the compile succeeds where torch alone fails, matches eager, and no op is
taken unchecked (issue 21)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from two_ranks import run_two_ranks

PROBE = Path(__file__).with_name("dist_probe.py")


@pytest.mark.slow
def test_two_ranks_distributed_autotuning_in_a_verified_block(tmp_path):
    env = {**os.environ, "TORCHINDUCTOR_DISTRIBUTED_MAX_AUTOTUNE_GEMM": "1",
           "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"), "OMP_NUM_THREADS": "1"}
    ranks = run_two_ranks(PROBE, tmp_path, env=env, timeout_s=600)
    for result in ranks:
        assert result["distributed"] is True and result["ok"] is True, result
        mms = [d for d in result["decisions"] if d["name"] == "mm"]
        assert len(mms) == 2, result["decisions"]
        for decision in mms:
            assert decision["winner_unchecked"] is False and not decision["unverified"]
            assert decision["origin"] == "tuned here"
            assert any("distributed autotuning: tuned here (on the CPU" in n
                       for n in decision["notes"])
            template = [c for c in decision["kept"] if c not in decision["externs"]]
            assert template and all(
                decision["checks"].get(c, {}).get("passed") is True or c in decision["rejected"]
                for c in template)
