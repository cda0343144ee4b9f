"""``iso.compile``: compile eagerly under the override, check against eager, fall back.

Stages, each checked on the example inputs against a reference (fp64 where the model
allows, else eager): ``override`` (``torch.compile`` with ``iso.backend``: the settings are
bound to the compiled function) -> ``plain`` torch.compile -> ``eager``. The returned
callable keeps the stage that passed in ``.used`` and every check in ``.checks``; a call
is a call of the compiled function (no toolkit work), and recompiles for new shapes, or a
lazily compiled backward, compile under the same settings (compile_scope.py).

What the checks guarantee (see docs/guide.md):

- outputs are compared leaf by leaf (outputs.py: tuples, dicts, HF ``ModelOutput``s and
  cache objects), a structure mismatch names its path;
- a model that builds an autograd graph (grad mode on and parameters or inputs that
  require grad) is compiled once, with its backward (training.py), and its gradients are
  checked too;
- a stochastic model (eager differs between two seeds) is compiled with Inductor's
  ``fallback_random`` so that compiled code reproduces eager under the same seed, and is
  checked that way; if eager does not even reproduce itself under one seed, no check is
  possible and the stages fail with that reason (the 4x-eager rule never passes it);
- the model and the inputs are left as they were: every check run gets cloned inputs
  (aliasing, strides and ``requires_grad`` kept, so dynamo's guards pass on the user's own
  call and the first real call does not compile again), the model's buffers are restored
  after it, gradients are taken with
  ``torch.autograd.grad`` (no ``.grad`` touched), the RNG state is restored at the end;
- each ``iso.compile`` compiles a fresh entry point (its own code object), so a second
  ``iso.compile`` of the same model with other settings compiles anew under its own
  settings, and the first keeps its kernels;
- a stage in which dynamo compiled no graph at all (it ran the model eagerly) fails: it
  would not run compiled kernels.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import statistics
import time
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..checks import outputs
from ..core import events, state
from ..core.errors import SettingsError
from ..core.settings import Settings
from . import training
from .backend import backend

EAGER_ERROR_FACTOR = 4.0  # a compiled output may be this many times eager's own error
FP64_MAX_PARAMS = 200_000_000
NOISE = 0.02  # prefer="fastest": the override must be this much faster than plain
TIMING_ROUNDS = 3  # prefer="fastest": interleaved rounds of median_time_ms per stage
SEED = 20260
_entry_ids = itertools.count(1)


@dataclasses.dataclass
class StageCheck:
    stage: str
    passed: bool
    max_abs: float | None = None
    max_rel: float | None = None
    rtol: float | None = None
    atol: float | None = None
    reference: str = ""
    reason: str = ""
    seconds: float | None = None  # compile + first run
    time_ms: float | None = None  # steady-state run time (prefer="fastest")
    graphs: int | None = None  # graphs dynamo compiled for this stage
    grad_max_abs: float | None = None  # gradients checked too (a model that trains)
    path: str = ""  # the output leaf that failed (or the worst one)
    choice: str = ""  # prefer="fastest": which stage was kept and why (the timings)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _fp64_model(model: Any) -> Any | None:
    import torch

    try:
        if isinstance(model, torch.nn.Module):
            if sum(p.numel() for p in model.parameters()) > FP64_MAX_PARAMS:
                return None
            devices = {p.device.type for p in model.parameters()}
            if "mps" in devices:
                return None
            return copy.deepcopy(model).double()
        return model
    except Exception:
        return None


def median_time_ms(fn: Callable[[], Any], repeat: int = 20, warmup: int = 3) -> float:
    """Median wall time of ``fn`` in ms (CUDA-synchronised when a GPU is in use)."""
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


class CheckedCompiled:
    """The callable returned by :func:`compile`; ``.used`` and ``.checks`` say what and why.

    ``.stochastic``: "deterministic", "seeded" (random, reproducible under a seed: compiled
    with ``fallback_random``) or "unreproducible"; ``.trains``: checked with gradients.
    """

    def __init__(self, model: Any, settings: dict[str, Any]) -> None:
        self.model = model
        self.settings = settings
        self.used: str = "eager"
        self.checks: list[StageCheck] = []
        self.stochastic: str = "deterministic"
        self.trains: bool = False
        self.choice: str = ""  # prefer="fastest": which stage was faster, by how much
        self._compiled: dict[str, Any] = {}
        self._call: Callable[..., Any] = model

    def _use(self, stage: str) -> None:
        self.used = stage
        self._call = self.model if stage == "eager" else self._compiled[stage]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(*args, **kwargs)

    def _run(self, stage: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        return self._compiled[stage](*args, **kwargs)

    def __repr__(self) -> str:
        return f"<iso.compile of {type(self.model).__name__}: used={self.used!r}>"


# --- arguments --------------------------------------------------------------------------------

_FIX = ("pass the model's positional inputs as a tuple, e.g. "
        "iso.compile(model, example_inputs=(x,)), and keyword inputs as "
        "example_kwargs={'attention_mask': mask}")


def example_arguments(example_inputs: Any, example_kwargs: Any) -> tuple[tuple, dict]:
    """Validate ``example_inputs`` / ``example_kwargs``; a bare tensor is one input."""
    import torch

    if example_kwargs is None:
        kwargs: dict[str, Any] = {}
    elif isinstance(example_kwargs, Mapping) and all(isinstance(k, str)
                                                     for k in example_kwargs):
        kwargs = dict(example_kwargs)
    else:
        raise TypeError(f"iso.compile: example_kwargs must be a dict of keyword inputs "
                        f"(str keys), not {type(example_kwargs).__name__}; {_FIX}")
    if example_inputs is None:
        if not kwargs:
            raise TypeError(f"iso.compile needs example inputs to compile and check the "
                            f"model on: {_FIX}")
        return (), kwargs
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), kwargs
    if isinstance(example_inputs, Mapping):
        raise TypeError("iso.compile: example_inputs is a dict; keyword inputs go in "
                        "example_kwargs: iso.compile(model, example_inputs=(), "
                        "example_kwargs=dict(inputs))")
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), kwargs
    raise TypeError(f"iso.compile: example_inputs must be a tuple of positional inputs (or one "
                    f"tensor), not {type(example_inputs).__name__}; {_FIX}")


def _settings_layer(settings: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(k for k in settings if k not in Settings.field_names())
    if unknown:
        raise SettingsError(
            f"iso.compile: unknown setting(s) {', '.join(map(repr, unknown))}; keyword inputs "
            f"of the model go in example_kwargs={{...}}, torch.compile arguments in "
            f"compile_kwargs={{...}}; settings are: {', '.join(Settings.field_names())}")
    layer = Settings.validate_layer(**settings)
    Settings().merged(layer)
    return layer


# --- the user's model is left as it was ----------------------------------------------------

class _Snapshot:
    """The model's buffers (and the running RNG states) before the checks; put back after
    each check run, so counters, BatchNorm statistics and the like end where they began."""

    def __init__(self, model: Any) -> None:
        import torch

        self.buffers: list[tuple[Any, Any]] = []
        if isinstance(model, torch.nn.Module):
            self.buffers = [(b, b.detach().clone()) for b in model.buffers()]

    def restore(self) -> None:
        import torch

        with torch.no_grad():
            for live, saved in self.buffers:
                if live.shape == saved.shape:
                    live.copy_(saved)


def _rng_devices() -> list[int]:
    import torch

    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def _detached(value: Any) -> Any:
    return outputs.map_tensors(value, lambda t: t.detach())


@dataclasses.dataclass
class _Run:
    output: Any
    grads: dict[str, Any]


class _Runner:
    """Runs the model (eager or a compiled stage) for a check: cloned inputs, a fixed seed,
    gradients when it trains, the model's buffers restored afterwards."""

    def __init__(self, model: Any, args: tuple, kwargs: dict, trains: bool) -> None:
        self.model, self.args, self.kwargs, self.trains = model, args, kwargs, trains
        self.snapshot = _Snapshot(model)
        self.cotangents: dict[str, Any] | None = None

    def run(self, fn: Callable[..., Any], seed: int, model: Any = None,
            convert: Callable[[Any], Any] = outputs.clone) -> _Run:
        import torch

        model = self.model if model is None else model
        args, kwargs = convert((self.args, self.kwargs))
        torch.manual_seed(seed)
        try:
            with torch.set_grad_enabled(self.trains):
                out = fn(*args, **kwargs)
                grads: dict[str, Any] = {}
                if self.trains:
                    if self.cotangents is None:
                        self.cotangents = training.cotangents(out)
                    grads = training.gradients(model, out, args, kwargs, self.cotangents)
            return _Run(_detached(out), {k: g.detach() for k, g in grads.items()})
        finally:
            self.snapshot.restore()


# --- compile ---------------------------------------------------------------------------------

def compile(
    model: Any,
    example_inputs: Any = None,
    *,
    example_kwargs: Mapping[str, Any] | None = None,
    mode: str = "max-autotune-no-cudagraphs",
    reference: str = "auto",
    prefer: str = "override",
    compile_kwargs: dict[str, Any] | None = None,
    **settings: Any,
) -> CheckedCompiled:
    """Compile ``model`` under the override now, check it, and fall back if it is wrong.

    ``example_inputs``: the positional inputs (a tuple; a single tensor is one input);
    ``example_kwargs``: keyword inputs (``attention_mask=``, ``use_cache=`` ...).
    ``reference``: "auto" (fp64 where the model allows, else eager), "fp64" or "eager".
    ``prefer``: "override" keeps the first stage that passes; "fastest" also compiles the
    plain path and keeps the faster of the two that pass (timed on the example inputs).
    Other keyword arguments are override settings (min_sms, max_choices, verify, ...).
    The compile runs in the current grad mode: with grad enabled and parameters (or
    inputs) that require grad, the backward is compiled too and gradients are checked.
    """
    import torch

    if reference not in ("auto", "fp64", "eager"):
        raise ValueError(f"reference={reference!r}: expected 'auto', 'fp64' or 'eager'")
    if prefer not in ("override", "fastest"):
        raise ValueError(f"prefer={prefer!r}: expected 'override' or 'fastest'")
    if "backend" in (compile_kwargs or {}):
        raise ValueError("iso.compile: compile_kwargs must not name a backend: the override "
                         "stage compiles with iso.backend, the plain stage with Inductor")
    layer = _settings_layer(settings)
    below = state.current()  # compiled inside a block: its settings are part of ours
    if below is not None:
        layer = {**below.as_dict(), **layer}
    args, kwargs = example_arguments(example_inputs, example_kwargs)
    tol = Settings().merged(layer)
    result = CheckedCompiled(model, layer)
    result.trains = training.needs_grad(model, args, kwargs)
    runner = _Runner(model, args, kwargs, result.trains)
    with torch.random.fork_rng(devices=_rng_devices()):
        _compile_checked(result, runner, tol, reference, prefer, mode, compile_kwargs or {})
    failed = next((c for c in result.checks if c.stage == "override" and not c.passed), None)
    if result.used != "override" or result.choice:
        events.publish(tol, {"event": "fallback" if result.used != "override" else "choice",
                   "used": result.used,
                   "reason": failed.reason if failed is not None else result.choice,
                   "checks": [c.as_dict() for c in result.checks]})
    return result


@dataclasses.dataclass
class _Reference:
    run: _Run
    name: str
    eager: _Run | None  # eager's own result, for the EAGER_ERROR_FACTOR rule (None: no rule)


def _compile_checked(result: CheckedCompiled, runner: _Runner, tol: Settings, reference: str,
                     prefer: str, mode: str, compile_kwargs: dict[str, Any]) -> None:
    eager = runner.run(runner.model, SEED)
    result.stochastic = _stochastic(runner, eager)
    ref = _reference(result, runner, eager, reference)
    options = None
    if result.stochastic == "seeded":
        options = {"fallback_random": True}  # compiled code draws eager's random numbers
    candidates: list[StageCheck] = []
    for stage in ("override", "plain"):
        check = _try_stage(result, runner, stage, ref, tol, mode, compile_kwargs, options)
        result.checks.append(check)
        if check.passed:
            candidates.append(check)
            if prefer == "override":
                break
    if prefer == "fastest" and len(candidates) > 1:
        forced, plain = candidates
        samples: dict[str, list[float]] = {"override": [], "plain": []}
        for _ in range(TIMING_ROUNDS):  # interleaved: drift (clocks, other load) hits both
            for check in candidates:
                samples[check.stage].append(_time_stage(result, runner, check.stage))
        for check in candidates:
            check.time_ms = statistics.median(samples[check.stage])
        stage, result.choice = choose_faster(forced.time_ms, plain.time_ms)
        forced.choice = plain.choice = result.choice
        result._use(stage)
    elif candidates:
        result._use(candidates[0].stage)
    else:
        result._use("eager")
        result.checks.append(_eager_check(eager, ref, tol))


def choose_faster(override_ms: float, plain_ms: float) -> tuple[str, str]:
    """prefer="fastest": keep the override only when it is more than NOISE faster than
    plain (both timed as the same kind of callable: the compiled function, called
    directly). Returns the stage and why, with the numbers."""
    gain = 1.0 - override_ms / plain_ms if plain_ms > 0 else 0.0
    times = f"override {override_ms:.3f} ms, plain {plain_ms:.3f} ms per call"
    if gain > NOISE:
        return "override", f"override kept: {gain:.1%} faster than plain ({times})"
    if gain > 0:
        return "plain", (f"plain kept: the override was only {gain:.1%} faster ({times}); "
                         f"it must be more than {NOISE:.0%} faster to be kept")
    ratio = override_ms / plain_ms if plain_ms > 0 else float("inf")
    return "plain", f"plain kept: the override took {ratio:.2f}x the plain time ({times})"


def _stochastic(runner: _Runner, first: _Run) -> str:
    """"deterministic" (eager does not depend on the RNG), "seeded" (it does, and one seed
    reproduces it) or "unreproducible" (two runs under the same seed differ)."""
    other = runner.run(runner.model, SEED + 1)
    if outputs.identical(first.output, other.output) and \
            outputs.identical(first.grads, other.grads):
        return "deterministic"
    again = runner.run(runner.model, SEED)
    if outputs.identical(first.output, again.output) and \
            outputs.identical(first.grads, again.grads):
        return "seeded"
    return "unreproducible"


def _reference(result: CheckedCompiled, runner: _Runner, eager: _Run,
               reference: str) -> _Reference:
    if result.stochastic != "deterministic" or reference == "eager":
        if reference == "fp64":
            result.checks.append(StageCheck("reference", False, reference="eager",
                                            reason="fp64 not possible: the model is "
                                            "stochastic; eager under the same seed is used"))
        name = "eager (same seed)" if result.stochastic == "seeded" else "eager"
        return _Reference(eager, name, None)
    wide = _fp64_model(runner.model)
    if wide is not None:
        try:
            return _Reference(runner.run(wide, SEED, wide, _fp64_clone), "fp64", eager)
        except Exception:
            pass
    if reference == "fp64":
        result.checks.append(StageCheck("reference", False, reason="fp64 not possible"))
    return _Reference(eager, "eager", None)


def _fp64_clone(value: Any) -> Any:
    return outputs.to_fp64(outputs.clone(value))


def _entry_point(model: Any, label: str) -> Callable[..., Any]:
    """A function calling ``model`` with a code object of its own: dynamo caches compiled
    code per code object, so this compile never reuses (nor disturbs) another's."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return model(*args, **kwargs)

    name = f"iso_compile_{label}_{next(_entry_ids)}"
    changes: dict[str, Any] = {"co_name": name}
    if hasattr(call.__code__, "co_qualname"):
        changes["co_qualname"] = name
    code = call.__code__.replace(**changes)
    fn = types.FunctionType(code, call.__globals__, name, None, call.__closure__)
    fn.__qualname__ = name
    return fn


def _compile_fn(model: Any, label: str, mode: str, compile_kwargs: dict[str, Any],
                options: dict[str, Any] | None, settings: dict[str, Any]) -> Any:
    """torch.compile of a fresh entry point with ``iso.backend``: the settings bound to it
    for the override stage, none for the plain one (plain torch, even inside a block)."""
    import torch

    kwargs = dict(compile_kwargs)
    stage_mode = kwargs.pop("mode", mode)
    stage_options = {**(kwargs.pop("options", None) or {}), **(options or {})} or None
    bound = backend(mode=stage_mode, options=stage_options, **settings) \
        if label == "override" else backend.plain(stage_mode, stage_options)
    return torch.compile(_entry_point(model, label), backend=bound, **kwargs)


def _graph_count() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _try_stage(result: CheckedCompiled, runner: _Runner, stage: str, ref: _Reference,
               tol: Settings, mode: str, compile_kwargs: dict[str, Any],
               options: dict[str, Any] | None) -> StageCheck:
    started = time.perf_counter()
    before = _graph_count()
    try:
        result._compiled[stage] = _compile_fn(result.model, stage, mode, compile_kwargs, options,
                                              result.settings)
        got = runner.run(lambda *a, **k: result._run(stage, a, k), SEED)
    except Exception as exc:
        result._compiled.pop(stage, None)
        return StageCheck(stage, False, reference=ref.name,
                          reason=f"{type(exc).__name__}: {exc}"[:300],
                          seconds=time.perf_counter() - started)
    seconds = time.perf_counter() - started
    graphs = _graph_count() - before
    if result.stochastic == "unreproducible":
        return StageCheck(stage, False, reference=ref.name, seconds=seconds, graphs=graphs,
                          reason="not checkable: eager gives different outputs under the "
                          "same seed; check the model in eval mode (model.eval()) or make "
                          "it reproducible")
    if graphs <= 0:
        return StageCheck(stage, False, reference=ref.name, seconds=seconds, graphs=0,
                          reason="dynamo compiled no graph: the model ran eagerly (an error "
                          "or a graph break while tracing; TORCH_LOGS=graph_breaks shows "
                          "why), so no compiled kernel would run")
    factor = EAGER_ERROR_FACTOR if ref.eager is not None else None
    eager = ref.eager
    out = outputs.compare_trees(got.output, ref.run.output, eager.output if eager else None,
                                tol.rtol, tol.atol, factor)
    check = StageCheck(stage, out.passed, out.max_abs, out.max_rel, out.rtol, out.atol,
                       ref.name, out.reason, seconds, graphs=graphs, path=out.path)
    if out.passed and result.trains:
        grads = outputs.compare_trees(got.grads, ref.run.grads, eager.grads if eager else None,
                                      tol.rtol, tol.atol, factor, path="grad")
        check.grad_max_abs = grads.max_abs
        if not grads.passed:
            check.passed, check.reason, check.path = False, grads.reason, grads.path
    return check


def _eager_check(eager: _Run, ref: _Reference, tol: Settings) -> StageCheck:
    """The fallback, checked like the others: eager against the reference (trivially
    equal when the reference is eager itself)."""
    out = outputs.compare_trees(eager.output, ref.run.output, None, tol.rtol, tol.atol)
    passed, reason = out.passed, out.reason
    grad_max = None
    if eager.grads:
        grads = outputs.compare_trees(eager.grads, ref.run.grads, None, tol.rtol, tol.atol,
                                      path="grad")
        grad_max = grads.max_abs
        if not grads.passed:
            passed, reason = False, grads.reason
    note = "fallback: no compiled stage passed"
    return StageCheck("eager", passed, out.max_abs, out.max_rel, out.rtol, out.atol, ref.name,
                      f"{note}; {reason}" if reason else note, grad_max_abs=grad_max,
                      path=out.path)


def _time_stage(result: CheckedCompiled, runner: _Runner, stage: str) -> float:
    import torch

    args, kwargs = outputs.clone((runner.args, runner.kwargs))
    try:
        with torch.set_grad_enabled(runner.trains):
            return median_time_ms(lambda: result._run(stage, args, kwargs))
    finally:
        runner.snapshot.restore()
