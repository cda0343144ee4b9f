"""The seams issue 26 found between modules, each now kept in one place (compile_scope.py,
torch_plan/config_scope.py). Only the public API and torch's own observables are used, so
every test here also runs against the code before the rebuild, where each failed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch._inductor.config as config
from torch._dynamo.utils import counters
from torch._inductor import select_algorithm
from torch._inductor.custom_graph_pass import CustomGraphPass

import inductor_sm_override as iso

try:
    from torch._inductor.utils import fresh_cache
except ImportError:  # torch < 2.8
    from torch._inductor.utils import fresh_inductor_cache as fresh_cache


class UserPass(CustomGraphPass):
    """A user's post-grad pass (with a uuid, so the FX graph cache stays on); notes the
    Inductor config it runs under, i.e. the config of the compile itself."""

    def __init__(self) -> None:
        self.seen: list[dict] = []

    def __call__(self, graph: torch.fx.Graph) -> None:
        self.seen.append({"distributed": config.distributed_max_autotune_gemm})

    def uuid(self) -> str:
        return "test-one-way-core-user-pass-v1"


def _fn():
    lin = torch.nn.Linear(16, 16)

    def fn(x):
        return torch.relu(lin(x)) * 2

    return fn, torch.randn(4, 16)


def _hits() -> int:
    return counters["inductor"]["fxgraph_cache_hit"]


def test_the_salt_survives_torch_compile_options():
    """torch.compile(options={"post_grad_custom_post_pass": P()}) used to replace the
    toolkit's salted pass (compile_fx applies its config_patches after the compile entry):
    a graph made under one set of settings was served under another."""
    fn, x = _fn()
    seen = []
    with fresh_cache(), torch.no_grad():
        for settings in ({"max_choices": 2}, {"min_sms": 200, "max_choices": 8},
                         {"max_choices": 2}, None):
            torch._dynamo.reset()
            before = _hits()
            compiled = torch.compile(fn, options={"post_grad_custom_post_pass": UserPass()})
            if settings is None:
                compiled(x)
            else:
                with iso.override(**settings):
                    compiled(x)
            seen.append(_hits() - before)
    assert seen == [0, 0, 1, 0]  # other settings miss, the same hit, plain torch misses


def test_the_plain_stage_inside_a_block_compiles_as_plain_torch():
    """iso.compile's plain stage used to compile under the block's settings: torch's own
    feedback saver saw only the override stage's benchmarked ops (max_choices=0 in the
    block left the plain stage one choice, taken without benchmarking)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 32)).eval()
    x = torch.randn(8, 32)
    benchmarked: list[str] = []

    def saver(timings, name, *rest):
        benchmarked.append(name)

    cache = select_algorithm.get_algorithm_selector_cache()
    select_algorithm.add_feedback_saver(saver)
    try:
        with config.patch(freezing=True), torch.no_grad(), iso.override(max_choices=0):
            compiled = iso.compile(model, example_inputs=(x,), prefer="fastest", max_choices=4)
    finally:
        cache.feedback_saver_fns.remove(saver)
    assert [c.stage for c in compiled.checks] == ["override", "plain"]
    assert len(benchmarked) == 4, benchmarked  # two GEMMs in each stage
    torch.testing.assert_close(compiled(x), model(x))


def test_distributed_autotuning_is_off_under_a_fleet_whatever_the_flag_was_before():
    """The compile config used to be cached per (settings, user pass): a flag set after a
    first compile under fleet settings was no longer switched off."""
    fn, x = _fn()
    user = UserPass()
    with config.patch(post_grad_custom_post_pass=user, fx_graph_cache=False), \
            torch.no_grad(), iso.override(fleet="job"):
        torch.compile(fn)(x)
        with config.patch(distributed_max_autotune_gemm=True):
            torch._dynamo.reset()
            torch.compile(fn)(x)
    torch._dynamo.reset()
    assert [s["distributed"] for s in user.seen] == [False, False]


DEFAULTS_AGAIN = """
import json, torch, torch._inductor.config as config, inductor_sm_override as iso
keys = ["autotune_local_cache", "autotune_remote_cache", "autotune_in_subproc",
        "max_autotune_prune_choices_based_on_shared_mem", "post_grad_custom_post_pass"]
keys = [k for k in keys if hasattr(config, k) and config._is_default(k)]
before = {k: repr(getattr(config, k)) for k in keys}
lin = torch.nn.Linear(16, 16)
with torch.no_grad(), iso.override():
    torch.compile(lambda x: torch.relu(lin(x)) * 2)(torch.randn(8, 16))
print(json.dumps({"keys": keys, "same": before == {k: repr(getattr(config, k)) for k in keys},
                  "user_set": [k for k in keys if not config._is_default(k)]}))
"""


@pytest.mark.skipif(not hasattr(config, "_is_default"), reason="no ConfigModule._is_default")
def test_config_a_compile_changed_is_a_default_again_after_it(tmp_path):
    """After a compile under settings, the keys it changed read their old values AND count
    as defaults again (torch 2.13 and 2.11 used to mark them user-set). In a fresh
    interpreter: torch's own ``config.patch`` (used by other tests) leaves keys user-set."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path)}
    # the toolkit's variables and TORCHINDUCTOR_AUTOTUNE_* (an env value is not a default)
    env = {k: v for k, v in env.items()
           if not k.startswith(("INDUCTOR_SM_OVERRIDE", "TORCHINDUCTOR_AUTOTUNE"))}
    out = subprocess.run([sys.executable, "-c", DEFAULTS_AGAIN], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(result["keys"]) >= 4  # the keys the override changes, defaults at the start
    assert result["same"] and result["user_set"] == []
