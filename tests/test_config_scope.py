"""A compile's torch config changes across threads (issues 16 B, 14 item 10, 20).

Before torch 2.13 Inductor's (and functorch's) config is process-global. Config is applied
per compile (compile_scope.py): holders entered and left out of order by two threads must
still leave the config exactly as it was (refcounted, tested on a fake with 2.11's layout:
plain module state, a ``patch`` that snapshots on entry), and compiles that need different
config never overlap there (``ConfigGroups``). Live: two threads compiling at once with
different settings each compile under their own config (serialized on torch 2.11).
"""

from __future__ import annotations

import threading
from types import ModuleType
from typing import Any

import pytest

import inductor_sm_override as iso
from inductor_sm_override.torch_plan import compat, config_scope
from inductor_sm_override.torch_plan.config_scope import ConfigChanges


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


def test_same_changes_held_out_of_order_restore_a_process_global_config_exactly():
    """Two compiles of one group (the same settings) overlap: A in, B in, A out, B out."""
    config = GlobalConfig()
    seen: dict[str, Any] = {}

    def enter(name: str):
        def go() -> Any:
            handle = compat.enter_config(ConfigChanges(config, CHANGES))
            seen[name] = _values(config)["search_space"]
            return handle
        return go

    def leave(handle: Any) -> None:
        seen.setdefault("after first exit", _values(config)["search_space"])
        handle.exit()

    _interleave(enter("a"), leave, enter("b"), leave)
    assert _values(config) == ORIGINAL
    assert seen == {"a": "EXHAUSTIVE", "b": "EXHAUSTIVE", "after first exit": "EXHAUSTIVE"}
    assert config_scope.PROCESS_CONFIG.held() == {}


def test_a_compile_under_settings_holds_dynamos_compile_lock(monkeypatch):
    """From before a compile's config goes in until it is restored no other compile can
    start: dynamo's compile lock, which torch holds around dynamo's own compiles and
    backward compiles, is held around direct compile_fx calls too (any config layout)."""
    from inductor_sm_override import compile_scope

    plan = compat.current_plan()
    lock = plan.compile_lock
    assert lock is not None  # read in every release: torch._dynamo.convert_frame.compile_lock

    def other_thread_can_compile() -> bool:
        got: list[bool] = []

        def probe() -> None:
            got.append(lock.acquire(timeout=0.2))
            if got[-1]:
                lock.release()

        thread = threading.Thread(target=probe)
        thread.start(), thread.join(10)
        return got[0]

    for layout in (config_scope.PROCESS, config_scope.THREAD):
        monkeypatch.setattr(plan, "config_scope", layout)
        with compile_scope.applied(compile_scope.Binding(iso.Settings(max_choices=2))):
            assert not other_thread_can_compile()
        assert other_thread_can_compile()


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


def test_two_threads_compiling_at_once_each_get_their_own_config():
    """A compiles (dynamo, main thread) under search_space=EXHAUSTIVE; meanwhile worker B
    compiles under other settings (Inductor's compile entry called directly: dynamo compiles
    one frame at a time anyway, and torch 2.11 crashes when several threads trace with
    dynamo at once) and, where config is process-global (torch < 2.13), worker C without
    override settings. B and C wait until A's compile has ended; each lowers under its own
    config, and the config is as before at the end. (From 2.13 a plain compile in another
    thread is not held back: config is per thread, and torch's own thread-safety applies.)"""
    import random

    import torch
    import torch._inductor.compile_fx as entry
    import torch._inductor.config as config
    from torch._inductor import lowering

    from inductor_sm_override.core.settings import settings_key

    process = compat.current_plan().config_scope == config_scope.PROCESS
    keys = ("max_autotune_gemm_search_space", "post_grad_custom_post_pass")
    before = {k: getattr(config, k) for k in keys}
    base = random.random()  # fresh graphs: no FX-graph-cache hit from an earlier run
    shift = {"MainThread": base, "B": base + 0.25, "C": base + 0.5}
    graphs = {n: torch.fx.symbolic_trace(lambda x, s=shift[n]: (torch.sin(x) + s,))
              for n in ("B", "C")}  # traced here: fx tracing is not thread-safe
    sin = torch.ops.aten.sin.default
    real = lowering.lowerings[sin]
    seen: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    a_inside, b_inside = threading.Event(), threading.Event()

    def observed(*args: Any, **kwargs: Any) -> Any:
        name = threading.current_thread().name
        post_pass = config.post_grad_custom_post_pass
        seen[name] = {"search_space": config.max_autotune_gemm_search_space,
                      "salt": getattr(post_pass, "salt", None)}
        order.append(f"{name} in")
        if name == "MainThread":
            a_inside.set()
            seen[name]["overlapped"] = b_inside.wait(2)
            seen[name]["search_space_after"] = config.max_autotune_gemm_search_space
        elif name == "B":
            b_inside.set()
        order.append(f"{name} out")
        return real(*args, **kwargs)

    a_settings = iso.Settings(search_space="EXHAUSTIVE")
    b_settings = iso.Settings(search_space="DEFAULT", max_choices=2)
    errors: list[BaseException] = []

    def worker() -> None:
        name = threading.current_thread().name
        try:
            a_inside.wait(60)
            x = torch.ones(4)
            if name == "B":
                iso.backend(mode="default", search_space="DEFAULT", max_choices=2)(
                    graphs["B"], [x])
            else:  # as torch's own callers do: the module attribute, at call time
                entry.compile_fx(graphs["C"], [x])
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)
            b_inside.set()

    threads = [threading.Thread(target=worker, name=n) for n in ("B", "C")[:2 if process else 1]]
    lowering.lowerings[sin] = observed
    try:
        with iso.override():  # the main thread's block: its patches stay in meanwhile
            for thread in threads:
                thread.start()
            fn = torch.compile(lambda x: torch.sin(x) + shift["MainThread"],
                               backend=iso.backend(search_space="EXHAUSTIVE", mode="default"))
            fn(torch.ones(4))
            for thread in threads:
                thread.join(120)
    finally:
        lowering.lowerings[sin] = real
    assert not errors, errors
    a = seen["MainThread"]
    assert a["search_space"] == a["search_space_after"] == "EXHAUSTIVE"
    assert a["salt"] == settings_key(a_settings)
    assert seen["B"] == {"search_space": "DEFAULT", "salt": settings_key(b_settings)}
    if process:
        assert seen["C"] == {"search_space": before["max_autotune_gemm_search_space"],
                             "salt": None}
    assert a["overlapped"] is False  # one compile at a time
    assert order[:2] == ["MainThread in", "MainThread out"]
    assert {k: getattr(config, k) for k in keys} == before
    assert config_scope.PROCESS_CONFIG.held() == {}
