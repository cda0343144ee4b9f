"""Context manager / decorator semantics, isolation between threads and tasks, refcounting."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest
import torch._inductor.utils as utils
from torch._inductor.runtime.hints import DeviceProperties

import inductor_sm_override as iso
from inductor_sm_override.compile_scope import PATCHES


def test_import_patches_nothing_and_imports_no_torch():
    import subprocess
    import sys

    code = (
        "import sys, inductor_sm_override as iso; "
        "print('torch' in sys.modules, hasattr(iso, 'override'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


def test_status_before_inside_after(fake_gpu):
    before = iso.status()
    assert before["supported"] is True and before["patched"] is False and before["active"] is None
    assert before["torch_version"] == __import__("torch").__version__
    assert "torch._inductor.utils.is_big_gpu" in before["sites"]
    with iso.override(min_sms=40, max_choices=8) as settings:
        inside = iso.status()
        assert inside["patched"] is True and inside["refcount"] == 1
        assert inside["active"]["min_sms"] == 40 and inside["active"]["max_choices"] == 8
        assert settings.min_sms == 40
    after = iso.status()
    assert after["patched"] is False and after["active"] is None and after["refcount"] == 0


def test_sync_decorator(fake_gpu):
    @iso.override(min_sms=40)
    def step(x):
        """doc kept"""
        return x, utils.is_big_gpu(0), iso.status()["active"]["min_sms"]

    assert step.__doc__ == "doc kept" and step.__name__ == "step"
    assert step(3) == (3, True, 40)
    assert utils.is_big_gpu(0) is False and not PATCHES.installed


def test_async_decorator_and_async_with(fake_gpu):
    import inspect

    @iso.override(min_sms=40)
    async def step():
        await asyncio.sleep(0)
        return utils.is_big_gpu(0)

    assert inspect.iscoroutinefunction(step)

    async def main():
        first = await step()
        async with iso.override():
            second = utils.is_big_gpu(0)
        return first, second, utils.is_big_gpu(0)

    assert asyncio.run(main()) == (True, True, False)
    assert not PATCHES.installed


def test_decorator_restores_on_exception(fake_gpu):
    @iso.override()
    def bad():
        assert utils.is_big_gpu(0)
        raise RuntimeError("inside")

    with pytest.raises(RuntimeError, match="inside"):
        bad()
    assert utils.is_big_gpu(0) is False and not PATCHES.installed


def test_same_object_reentered_and_reused(fake_gpu):
    block = iso.override(min_sms=40)
    with block:
        with block:
            assert PATCHES.count == 2
        assert utils.is_big_gpu(0) is True
    with block:
        assert utils.is_big_gpu(0) is True
    assert utils.is_big_gpu(0) is False


def test_other_thread_stays_plain(fake_gpu):
    seen = {}
    entered, checked = threading.Event(), threading.Event()

    def other():
        seen["entered"] = entered.wait(60)  # False: the block was not seen in time
        seen["other"] = utils.is_big_gpu(0)
        seen["status"] = iso.status()["active"]
        checked.set()

    thread = threading.Thread(target=other)
    thread.start()
    with iso.override():
        entered.set()
        seen["checked"] = checked.wait(60)  # the other thread looked while the block was on
        seen["main"] = utils.is_big_gpu(0)
    thread.join()
    assert seen == {"entered": True, "checked": True, "other": False, "status": None,
                    "main": True}


def test_other_asyncio_task_stays_plain(fake_gpu):
    async def outsider(started: asyncio.Event, go: asyncio.Event):
        started.set()
        await go.wait()
        return utils.is_big_gpu(0)

    async def main():
        started, go = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(outsider(started, go))  # created before the block
        await started.wait()
        async with iso.override():
            go.set()
            inner = utils.is_big_gpu(0)
            other = await task
        return inner, other

    assert asyncio.run(main()) == (True, False)


def test_randomized_nesting_across_threads(fake_gpu):
    """1,000 random nested enter/exit sequences over 8 threads end exactly as they began."""
    gate, create = vars(utils)["is_big_gpu"], vars(DeviceProperties)["create"]
    errors: list[str] = []
    barrier = threading.Barrier(8)

    def check(seed: int, open_blocks: list) -> None:
        expected = bool(open_blocks) and open_blocks[-1][1] <= 46
        if utils._use_template_for_gpu(_layout(), [_f16()]) != expected:
            errors.append(f"thread {seed}: depth {len(open_blocks)} expected {expected}")

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        barrier.wait()
        for _sequence in range(125):  # 8 x 125 = 1,000 sequences
            open_blocks: list[tuple[object, int]] = []
            for _step in range(rng.randint(2, 8)):
                if open_blocks and (rng.random() < 0.45 or len(open_blocks) >= 4):
                    open_blocks.pop()[0].__exit__(None, None, None)
                else:
                    min_sms = rng.choice([0, 40, 46, 47, 64])
                    block = iso.override(min_sms=min_sms)
                    block.__enter__()
                    open_blocks.append((block, min_sms))
                check(seed, open_blocks)
            while open_blocks:
                open_blocks.pop()[0].__exit__(None, None, None)
                check(seed, open_blocks)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert vars(utils)["is_big_gpu"] is gate and vars(DeviceProperties)["create"] is create
    assert PATCHES.count == 0 and not PATCHES.installed


def _f16():
    import torch

    return torch.float16


def _layout():
    import torch
    from torch._inductor import ir

    return ir.FixedLayout(torch.device("cuda", 0), torch.float16, [8, 8])
