"""``iso.limit_sms(n)``: run this thread's GPU work on about n SMs of a big GPU.

Built on CUDA green contexts (torch >= 2.10). What was measured on an H100
(benchmarks/results/h100-torch2.11-notes-2026-11.md) shapes the design:

- a green context restricts only work launched from the thread that entered it, so inside
  the block Inductor's autotuning is kept in this thread (no subprocess, no pipelined
  async benchmarking);
- the SM count is rounded to the architecture's partition granularity and the block says
  what it used (``.sms``, ``.requested``);
- wherever the green context has ``Stream()`` (read in 2.11 and 2.13, so the GPU
  machines' release takes this path) the work is routed through that stream
  (``torch.cuda.stream(ctx.Stream())``): no context push/pop. Only work on the *current
  stream* is restricted: Inductor's own streams (cudagraph trees' warm-up and replay
  streams, side streams), NCCL and other threads run on the whole GPU, so time with
  ``mode="max-autotune-no-cudagraphs"``. The green stream first waits for the caller's
  stream; on exit the caller's stream waits for the green stream (a result read after the
  block is complete), and the context is kept alive until its queued work is done. Where
  ``Stream()`` is missing,
  ``set_context``/``pop_context`` are used, and a failing ``pop_context`` (seen after
  compiles ran inside) is answered by making the device's primary context current again,
  with a warning;
- the GPU's real SM count is read even inside ``override(simulate_sms=...)``.

Decisions are a separate matter: combine with ``override(simulate_sms=n)`` so Inductor
also *believes* it has n SMs.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import warnings
from typing import Any

from ..torch_plan.compat import ConfigChanges, enter_config
from ..torch_plan.hardware import LIMITS, real_properties

# compute capability major -> (minimum SMs, multiple) of a green-context SM partition
# (CUDA driver docs for cuDevSmResourceSplitByCount).
_GRANULARITY = {6: (1, 1), 7: (2, 2), 8: (4, 2)}
_GRANULARITY_SM90_PLUS = (8, 8)


def sm_granularity(major: int) -> tuple[int, int]:
    """(minimum, multiple) of an SM partition on an architecture."""
    if major >= 9:
        return _GRANULARITY_SM90_PLUS
    return _GRANULARITY.get(major, (1, 1))


def round_sms(requested: int, major: int, total: int) -> int:
    """The SM count a green context can really have: nearest multiple, within [min, total]."""
    if requested < 1:
        raise ValueError(f"limit_sms(n={requested}): n must be >= 1")
    minimum, multiple = sm_granularity(major)
    nearest = max(minimum, math.floor(requested / multiple + 0.5) * multiple)  # ties up
    return min(nearest, total - total % multiple if total >= multiple else total)


class limit_sms:  # noqa: N801 - used like a keyword, as iso.override
    """Context manager: GPU work in this thread runs on about ``n`` SMs (green context).

    Attributes after entry: ``requested``, ``sms`` (what was used after rounding),
    ``total`` (the GPU's SMs), ``device``. Raises RuntimeError with a clear message where
    this cannot work (no CUDA GPU, torch < 2.10, torch built without green contexts).
    """

    def __init__(self, n: int, device: int | None = None) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"limit_sms(n={n!r}): n must be an integer >= 1")
        self.requested = n
        self.device = device
        self.sms: int | None = None
        self.total: int | None = None
        self._stack: contextlib.ExitStack | None = None
        self._ctx: Any = None
        self._token: contextvars.Token | None = None

    def __enter__(self) -> limit_sms:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("limit_sms needs a CUDA GPU; none is visible")
        green = _green_contexts()
        index = torch.cuda.current_device() if self.device is None else self.device
        props = real_properties(index)  # not simulate_sms
        self.device, self.total = index, props.multi_processor_count
        self.sms = round_sms(self.requested, props.major, self.total)
        if self.sms != self.requested:
            warnings.warn(f"limit_sms({self.requested}): sm_{props.major}{props.minor} "
                          f"partitions SMs in steps of {sm_granularity(props.major)[1]}; "
                          f"using {self.sms} SMs", RuntimeWarning, stacklevel=2)
        torch.cuda.synchronize(index)
        _prune_retired()
        self._ctx = green.GreenContext.create(num_sms=self.sms, device_id=index)
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(_in_thread_autotuning())
            make_stream = getattr(self._ctx, "Stream", None)
            if callable(make_stream):
                caller = torch.cuda.current_stream(index)
                stream = make_stream()
                stream.wait_stream(caller)  # work queued before the block comes first
                stack.callback(self._join, caller, stream)  # after the stream is left
                stack.enter_context(torch.cuda.stream(stream))
            else:
                self._ctx.set_context()
                stack.callback(self._pop, index)
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        self._token = LIMITS.set((*LIMITS.get(), (index, self.sms)))
        return self

    def _join(self, caller: Any, stream: Any) -> None:
        """The caller's stream waits for what the block queued on the green stream (torch's
        ``StreamContext.__exit__`` only restores the previous stream), and the green context
        and its stream stay referenced until that work is done, even if this object is
        dropped (destroying a green context with work queued is undefined)."""
        caller.wait_stream(stream)
        _retired.append((self._ctx, stream, stream.record_event()))

    def _pop(self, index: int) -> None:
        import torch

        torch.cuda.synchronize(index)
        try:
            self._ctx.pop_context()
        except Exception as exc:  # seen on an H100 after compiles ran inside
            _restore_primary_context(index)
            warnings.warn(f"limit_sms: pop_context failed ({exc}); the device's primary "
                          "context was made current again", RuntimeWarning, stacklevel=3)

    def __exit__(self, *exc_info: Any) -> None:
        token, self._token = self._token, None
        if token is not None:
            try:
                LIMITS.reset(token)
            except ValueError:  # left in another context than entered: drop this one only
                LIMITS.set(tuple(b for b in LIMITS.get() if b != (self.device, self.sms)))
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()
        _prune_retired()

    def __repr__(self) -> str:
        return f"limit_sms(requested={self.requested}, sms={self.sms}, total={self.total})"


# green contexts whose blocks ended: (context, its stream, an event recorded at the end)
_retired: list[tuple[Any, Any, Any]] = []


def _prune_retired() -> None:
    """Let go of retired green contexts whose queued work has finished."""
    _retired[:] = [entry for entry in _retired if not _done(entry[2])]


def _done(event: Any) -> bool:
    try:
        return bool(event.query())
    except Exception:  # a broken event: keep the context (a leak beats a crash)
        return False


def _green_contexts() -> Any:
    import torch

    try:
        from torch.cuda import green_contexts
    except ImportError:
        raise RuntimeError(
            f"limit_sms needs CUDA green contexts (torch >= 2.10); this is torch "
            f"{torch.__version__}") from None
    if not getattr(green_contexts, "SUPPORTED", True):
        raise RuntimeError(f"limit_sms: torch {torch.__version__} was built without green "
                           "context support (needs a CUDA 12.4+ build and driver)")
    return green_contexts


@contextlib.contextmanager
def _in_thread_autotuning() -> Any:
    """Autotune benchmarks in this thread (green contexts are per thread)."""
    import torch._inductor.config as config

    changes = {k: False for k in ("autotune_in_subproc", "pipeline_max_autotune_gemm")
               if hasattr(config, k)}
    handle = enter_config(ConfigChanges(config, changes))  # refcounted before torch 2.13
    try:
        yield
    finally:
        handle.exit()


def _restore_primary_context(index: int) -> None:
    """Make the device's primary context current (the one torch's runtime uses)."""
    import torch

    with contextlib.suppress(Exception):
        torch.cuda.set_device(index)
        torch.cuda.synchronize(index)
