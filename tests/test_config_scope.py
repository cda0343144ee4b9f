"""A block's torch config changes across threads (issue 16 B, issue 14 item 10).

Before torch 2.13 Inductor's (and functorch's) config is process-global: blocks entered and
left out of order by two threads must still leave the config exactly as it was. Tested on a
fake with 2.11's layout (plain module state, a ``patch`` that snapshots on entry), and live
on the running torch's real Inductor config (process-global when run on torch 2.11).
"""

from __future__ import annotations

import threading
from types import ModuleType
from typing import Any

import pytest

import inductor_sm_override as iso
from inductor_sm_override import block, compat, config_scope
from inductor_sm_override.config_scope import ConfigChanges


class GlobalConfig(ModuleType):
    """torch 2.11's ConfigModule semantics: one value per key for the whole process."""

    def __init__(self) -> None:
        super().__init__("fake_process_global_config")
        self.search_space = "DEFAULT"
        self.local_cache = True
        self.post_pass = None

    def patch(self, changes: dict[str, Any]) -> Any:  # 2.11 ConfigPatch: snapshot on entry
        config, prior = self, {}

        class Patch:
            def __enter__(self) -> None:
                prior.update({k: getattr(config, k) for k in changes})
                for k, v in changes.items():
                    setattr(config, k, v)

            def __exit__(self, *exc: Any) -> None:
                for k, v in prior.items():
                    setattr(config, k, v)

        return Patch()


CHANGES = {"search_space": "EXHAUSTIVE", "local_cache": False, "post_pass": object()}
ORIGINAL = {"search_space": "DEFAULT", "local_cache": True, "post_pass": None}


def _values(config: Any) -> dict[str, Any]:
    return {k: getattr(config, k) for k in ORIGINAL}


def _interleave(enter_a: Any, exit_a: Any, enter_b: Any, exit_b: Any) -> None:
    """A enters, B enters, A leaves, B leaves: each in its own thread."""
    steps = [threading.Event() for _ in range(4)]
    errors: list[BaseException] = []

    def run(enter: Any, leave: Any, go_in: int, go_out: int) -> None:
        try:
            assert steps[go_in].wait(60), f"step {go_in} never came"
            token = enter()
            steps[go_in + 1].set()
            assert steps[go_out].wait(60), f"step {go_out} never came"
            leave(token)
            if go_out + 1 < len(steps):
                steps[go_out + 1].set()
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)
            for step in steps:
                step.set()

    steps[0].set()
    a = threading.Thread(target=run, args=(enter_a, exit_a, 0, 2))
    b = threading.Thread(target=run, args=(enter_b, exit_b, 1, 3))
    a.start(), b.start()
    a.join(120), b.join(120)
    assert not errors, errors
    assert not a.is_alive() and not b.is_alive()


def test_fake_has_the_process_layout_and_bare_patch_leaks():
    """The defect, reproduced: with a snapshot-on-entry patch, out-of-order exits leak."""
    config = GlobalConfig()
    assert compat.scope_of(config) == config_scope.PROCESS

    def enter() -> Any:
        patch = config.patch(CHANGES)
        patch.__enter__()
        return patch

    _interleave(enter, lambda p: p.__exit__(None, None, None), enter,
                lambda p: p.__exit__(None, None, None))
    assert _values(config)["search_space"] == "EXHAUSTIVE"  # left behind forever


@pytest.fixture
def fake_hook():
    config = GlobalConfig()
    block.BLOCK_HOOKS["test_fake_global"] = lambda s: ConfigChanges(
        config, {**CHANGES, "search_space": s.search_space or "EXHAUSTIVE"})
    try:
        yield config
    finally:
        del block.BLOCK_HOOKS["test_fake_global"]
    assert config_scope.PROCESS_CONFIG.held() == {}


def test_interleaved_blocks_restore_a_process_global_config_exactly(fake_hook):
    config = fake_hook
    seen: dict[str, Any] = {}

    def enter(search_space: str):
        def go() -> Any:
            block_ = iso.override(search_space=search_space)
            block_.__enter__()
            seen[search_space] = _values(config)["search_space"]
            return block_
        return go

    def leave(block_: Any) -> None:
        seen[f"after {block_.layer['search_space']}"] = _values(config)["search_space"]
        block_.__exit__(None, None, None)

    _interleave(enter("EXHAUSTIVE"), leave, enter("DEFAULT"), leave)
    assert _values(config) == ORIGINAL
    # meanwhile the most recently entered live block's values are in force, process-wide
    assert seen == {"EXHAUSTIVE": "EXHAUSTIVE", "DEFAULT": "DEFAULT",
                    "after EXHAUSTIVE": "DEFAULT", "after DEFAULT": "DEFAULT"}


def test_process_layout_other_threads_see_the_block_and_user_values_survive():
    config = GlobalConfig()
    first = compat.enter_config(ConfigChanges(config, CHANGES))
    seen: list[Any] = []
    thread = threading.Thread(target=lambda: seen.append(_values(config)))
    thread.start(), thread.join()
    assert seen[0] == CHANGES  # another thread, outside any block, sees the block's config
    second = compat.enter_config(ConfigChanges(config, {"local_cache": False}))
    config.search_space = "MINE"  # user code assigns a held key inside the block
    first.exit()
    assert config.local_cache is False  # still held by the second block
    first.exit()  # idempotent
    second.exit()
    assert _values(config) == {**ORIGINAL, "search_space": "MINE"}
    assert config_scope.PROCESS_CONFIG.held() == {}


def test_process_layout_failed_enter_undoes_what_it_applied():
    config = GlobalConfig()
    with pytest.raises(AttributeError):
        compat.enter_config(ConfigChanges(config, {"local_cache": False, "no_such_key": 1}))
    assert _values(config) == ORIGINAL and config_scope.PROCESS_CONFIG.held() == {}


def test_thread_layout_is_detected_on_contextvar_configs():
    import torch
    import torch._functorch.config as functorch_config
    import torch._inductor.config as config

    expected = (config_scope.THREAD if compat.torch_release(torch.__version__) in
                ("2.13", "2.14", "2.15") else config_scope.PROCESS)
    if compat.VERSION_TABLE.get(compat.torch_release(torch.__version__)):
        entry = compat.VERSION_TABLE[compat.torch_release(torch.__version__)]
        assert entry.config_scope == expected
    assert compat.scope_of(config) == expected == compat.scope_of(functorch_config)
    assert compat.current_plan().describe()["config_scope"] == expected


def test_live_interleaved_threads_leave_inductor_config_exactly():
    """On torch 2.11 (process-global config) this failed before the fix: the search space
    stayed EXHAUSTIVE, autotune_local_cache stayed False, the salted pass stayed in."""
    import torch._inductor.config as config

    keys = ("max_autotune_gemm_search_space", "autotune_local_cache",
            "post_grad_custom_post_pass", "autotune_in_subproc")
    before = {k: getattr(config, k) for k in keys}
    inside: list[Any] = []

    def enter(**kw: Any):
        def go() -> Any:
            block_ = iso.override(verify=True, **kw)
            block_.__enter__()
            inside.append(config.max_autotune_gemm_search_space)
            return block_
        return go

    _interleave(enter(search_space="EXHAUSTIVE"), lambda b: b.__exit__(None, None, None),
                enter(search_space="DEFAULT", max_choices=2),
                lambda b: b.__exit__(None, None, None))
    assert inside == ["EXHAUSTIVE", "DEFAULT"]
    assert {k: getattr(config, k) for k in keys} == before
    assert config_scope.PROCESS_CONFIG.held() == {}
