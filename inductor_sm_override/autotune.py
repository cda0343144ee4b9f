"""Hooks into Inductor's autotuner: cap/budget the choices, verify each forced one, record.

Installed with the SM gate (same refcounted patch set) when the torch has the hooks:

- ``AlgorithmSelectorCache.__call__`` wrapper: opens an :class:`OpRecord` for the op and
  bounds the precompilation timeout by the remaining budget;
- a preprocessing fn: ranks the template choices (search.py), keeps ``max_choices`` and
  what the budget allows, puts the extern (ATen) choices first, tags every kept choice
  with its record;
- ``AlgorithmSelectorCache.benchmark_choice`` wrapper: compares the output each template
  wrote in its timed run with the reference; a mismatch, NaN/Inf or an exception makes
  its timing ``inf`` (never an exception);
- ``AlgorithmSelectorCache.do_autotuning`` wrapper (where it exists): times the op;
- a feedback saver: closes the record (timings, winner, rejected), settles the budget and
  removes rejected choices from the timings Inductor keeps.
"""

from __future__ import annotations

import contextvars
import dataclasses
import inspect
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import wrapt

from . import state
from .patching import Append, Patch
from .settings import Settings
from .verify import Check, compare, fp64_reference

log = logging.getLogger("inductor_sm_override")

TAG = "_inductor_sm_override_op"

_CURRENT_OP: contextvars.ContextVar[OpRecord | None] = contextvars.ContextVar(
    "inductor_sm_override_op", default=None
)
_records: list[OpRecord] = []
_records_lock = threading.Lock()
MAX_RECORDS = 10_000
listeners: list[Callable[[OpRecord], None]] = []  # told of every finished op


@dataclasses.dataclass(eq=False)
class OpRecord:
    """What happened to one autotuned op."""

    name: str
    settings: Settings
    shapes: list[list[int] | None] = dataclasses.field(default_factory=list)
    dtypes: list[str] = dataclasses.field(default_factory=list)
    device: str = ""
    sms: int | None = None
    offered: list[str] = dataclasses.field(default_factory=list)
    kept: list[str] = dataclasses.field(default_factory=list)
    dropped: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> cap/budget
    externs: list[Any] = dataclasses.field(default_factory=list, repr=False)
    timings: dict[str, float | None] = dataclasses.field(default_factory=dict)
    rejected: dict[str, str] = dataclasses.field(default_factory=dict)
    checks: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    winner: str | None = None
    started: float = dataclasses.field(default_factory=time.perf_counter)
    autotune_s: float = 0.0
    seconds: float | None = None
    reserved_s: float = 0.0
    budget: Any = dataclasses.field(default=None, repr=False)
    notes: list[str] = dataclasses.field(default_factory=list)
    _references: dict[int, tuple[Any, Any]] = dataclasses.field(default_factory=dict, repr=False)

    def reference(self, autotune_args: Any) -> tuple[Any, str] | None:
        """The reference output for these benchmark inputs (computed once), and its source."""
        key = id(autotune_args)
        if key in self._references:
            return self._references[key][1]
        found = _compute_reference(self, autotune_args)
        self._references[key] = (autotune_args, found)  # keep args alive: ids stay unique
        return found

    def set_reference(self, autotune_args: Any, tensor: Any, source: str) -> None:
        if id(autotune_args) not in self._references:
            self._references[id(autotune_args)] = (autotune_args, (tensor, source))

    def reject(self, choice_name: str, reason: str) -> None:
        self.rejected[choice_name] = reason
        self.timings[choice_name] = None

    def as_event(self) -> dict[str, Any]:
        """The JSON-able 'autotune' event of this op."""
        event = {
            "event": "autotune",
            "name": self.name,
            "device": self.device,
            "sms": self.sms,
            "shapes": self.shapes,
            "dtypes": self.dtypes,
            "offered": self.offered,
            "kept": self.kept,
            "capped": sorted(n for n, why in self.dropped.items() if why == "cap"),
            "budget_dropped": sorted(n for n, why in self.dropped.items() if why == "budget"),
            "externs": [_choice_name(c) for c in self.externs],
            "timings": self.timings,
            "winner": self.winner,
            "rejected": self.rejected,
            "checks": self.checks,
            "seconds": None if self.seconds is None else round(self.seconds, 4),
            "verify": self.settings.verify,
            "notes": self.notes,
        }
        if self.budget is not None:
            event["budget"] = self.budget.as_dict()
        return event


def decisions() -> list[dict[str, Any]]:
    """The 'autotune' events of the ops autotuned in this process (oldest first)."""
    return [record.as_event() for record in records()]


def clear_decisions() -> None:
    """Forget the recorded autotune decisions."""
    clear_records()


def records() -> list[OpRecord]:
    """Records of the autotuned ops finished in this process (oldest first)."""
    with _records_lock:
        return list(_records)


def clear_records() -> None:
    with _records_lock:
        _records.clear()


def _is_extern(choice: Any) -> bool:
    from torch._inductor.select_algorithm import AlgorithmSelectorCache, ExternKernelCaller

    check = getattr(AlgorithmSelectorCache, "_is_extern", None)
    if check is not None:
        return bool(check(choice))
    return isinstance(choice, ExternKernelCaller)


def _choice_name(choice: Any) -> str:
    return str(getattr(choice, "name", None) or repr(choice))


# --- __call__ wrapper: open the op ---------------------------------------------------------

def _open_op(name: str, input_nodes: Any, layout: Any, settings: Settings) -> OpRecord:
    from .gate import sm_count

    record = OpRecord(name=str(name), settings=settings, budget=state.current_budget())
    for node in input_nodes or ():
        try:
            record.shapes.append([int(s) for s in node.get_size()])
        except Exception:
            record.shapes.append(None)
        record.dtypes.append(str(getattr(node, "get_dtype", lambda: "?")()))
    device = getattr(layout, "device", None)
    record.device = str(device)
    if device is not None and device.type != "cpu":
        try:
            from .compat import current_plan

            record.sms = sm_count(current_plan(), device)
        except Exception:
            record.sms = None
    return record


def _selector_call(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    settings = state.current()
    if settings is None:
        return wrapped(*args, **kwargs)
    _ensure_hooks(instance)
    try:
        bound = inspect.signature(wrapped).bind_partial(*args, **kwargs).arguments
    except TypeError:
        bound = {}
    record = _open_op(bound.get("name", "?"), bound.get("input_nodes"), bound.get("layout"),
                      settings)
    if record.budget is not None:
        args, kwargs = _bound_timeout(wrapped, args, kwargs, bound, record.budget.remaining)
    token = _CURRENT_OP.set(record)
    try:
        result = wrapped(*args, **kwargs)
    finally:
        _CURRENT_OP.reset(token)
    chosen = result[1] if isinstance(result, tuple) and len(result) == 2 else None
    if record.seconds is None and chosen is not None:
        # Selected without the feedback saver (a sole choice, a deterministic pick, a
        # cache hit): close the record here. Deferred selections close in feedback().
        record.winner = record.winner or _choice_name(chosen)
        _close(record, benchmarked=False)
    return result


def _ensure_hooks(cache: Any) -> None:
    """Put our preprocessing fn / feedback saver back if user code cleared Inductor's lists
    (``clear_preprocessing_fns()``) while a block is active: verification must not lapse."""
    for attr, fn in (("preprocessing_fns", preprocess), ("feedback_saver_fns", feedback)):
        hooks = getattr(cache, attr, None)
        if isinstance(hooks, list) and not any(h is fn for h in hooks):
            hooks.append(fn)


def _bound_timeout(wrapped: Any, args: tuple, kwargs: dict, bound: dict,
                   remaining: float) -> tuple[tuple, dict]:
    """Bound the precompilation timeout argument by the remaining budget."""
    names = list(inspect.signature(wrapped).parameters)
    if "precompilation_timeout_seconds" not in names:
        return args, kwargs
    given = bound.get("precompilation_timeout_seconds") or 3600
    timeout = max(1, int(min(given, max(remaining, 0.0) + 1)))
    index = names.index("precompilation_timeout_seconds")
    if len(args) > index:
        args = (*args[:index], timeout, *args[index + 1:])
    else:
        kwargs = {**kwargs, "precompilation_timeout_seconds": timeout}
    return args, kwargs


# --- preprocessing fn: rank, cap, budget, tag ----------------------------------------------

def preprocess(choices: list[Any]) -> list[Any]:
    """Keep every extern choice first, then the best ``max_choices`` templates the budget allows."""
    settings = state.current()
    if settings is None:
        return choices
    from .search import problem_from, rank

    record = _CURRENT_OP.get()
    if record is None:
        record = OpRecord(name="?", settings=settings, budget=state.current_budget())
    names = {id(c): _choice_name(c) for c in choices}
    externs = [c for c in choices if _is_extern(c)]
    templates = [c for c in choices if not _is_extern(c)]
    record.offered = [names[id(c)] for c in choices]
    record.externs = externs
    problem = None
    if templates:
        first = templates[0]
        sms = record.sms or 1
        problem = problem_from(getattr(first, "layout", None),
                               getattr(first, "input_nodes", ()), sms)
    ranked = rank(templates, problem)
    keep = len(ranked)
    if settings.max_choices is not None and settings.max_choices < keep:
        for choice in ranked[settings.max_choices:]:
            record.dropped[names[id(choice)]] = "cap"
        keep = settings.max_choices
    if record.budget is not None:
        allowed, reserved = record.budget.allowance(keep)
        record.reserved_s = reserved
        for choice in ranked[allowed:keep]:
            record.dropped[names[id(choice)]] = "budget"
        keep = allowed
    if not externs and keep == 0 and ranked:
        keep = 1  # Inductor needs a choice; there is no fallback to keep instead
        record.dropped.pop(names[id(ranked[0])], None)
        record.notes.append("no extern choice: the best-ranked template was kept")
    kept = externs + ranked[:keep]
    if settings.verify and len(kept) == 1 and not externs:
        record.notes.append("sole choice: Inductor takes it without benchmarking (unverified)")
    record.kept = [names[id(c)] for c in kept]
    for choice in kept:
        try:
            setattr(choice, TAG, record)
        except Exception:
            record.notes.append(f"could not tag {names[id(choice)]}")
    return kept


# --- benchmark_choice wrapper: verify the timed output -------------------------------------

def _tensors(autotune_args: Any, extern: bool) -> tuple[list[Any], Any]:
    inputs, output = autotune_args.get_benchmark_tensors(extern).unpack()
    return list(inputs), output


def _compute_reference(record: OpRecord, autotune_args: Any) -> tuple[Any, str] | None:
    for extern in record.externs:
        try:
            inputs, out = _tensors(autotune_args, True)
            fn = extern.to_callable()
            result = out.clone()
            if getattr(extern, "has_out_variant", True):
                fn(*inputs, out=result)
            else:
                result.copy_(fn(*inputs))
            return result, f"extern {_choice_name(extern)}"
        except Exception as exc:  # try the next extern, then fp64
            record.notes.append(f"reference from {_choice_name(extern)} failed: {exc!r}"[:200])
    try:
        inputs, _out = _tensors(autotune_args, False)
        wide = fp64_reference(record.name, inputs)
    except Exception:
        wide = None
    return (wide, "fp64") if wide is not None else None


def _benchmark_choice(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> float:
    bound = dict(zip(("choice", "autotune_args"), args, strict=False))
    bound.update(kwargs)
    choice, autotune_args = bound.get("choice"), bound.get("autotune_args")
    record: OpRecord | None = getattr(choice, TAG, None)
    if record is None or autotune_args is None:
        return wrapped(*args, **kwargs)
    name = _choice_name(choice)
    if _is_extern(choice):
        timing = wrapped(*args, **kwargs)
        try:
            _inputs, out = _tensors(autotune_args, True)
            record.set_reference(autotune_args, out.clone(), f"extern {name}")
        except Exception:
            pass
        record.timings[name] = _finite_or_none(timing)
        return timing
    try:
        timing = wrapped(*args, **kwargs)
    except Exception as exc:  # incl. torch's own VERIFY AssertionError: reject, never abort
        record.reject(name, f"{type(exc).__name__}: {exc}"[:300])
        return math.inf
    if not record.settings.verify:
        record.timings[name] = _finite_or_none(timing)
        return timing
    outcome = _check(record, autotune_args, name)
    if outcome is not None:
        record.reject(name, outcome)
        return math.inf
    record.timings[name] = _finite_or_none(timing)
    return timing


def _check(record: OpRecord, autotune_args: Any, name: str) -> str | None:
    """None when the choice's timed output matches the reference, else the reason."""
    reference = record.reference(autotune_args)
    if reference is None:
        return "no reference available to verify against"
    expected, source = reference
    try:
        _inputs, out = _tensors(autotune_args, False)
        result: Check = compare(out, expected, record.settings.rtol, record.settings.atol)
    except Exception as exc:
        return f"verification failed: {type(exc).__name__}: {exc}"[:300]
    record.checks[name] = {**result.as_dict(), "reference": source}
    return None if result.passed else f"mismatch vs {source}: {result.reason}"


def _finite_or_none(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


# --- do_autotuning wrapper: time the op ----------------------------------------------------

def _do_autotuning(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    started = time.perf_counter()
    try:
        return wrapped(*args, **kwargs)
    finally:
        elapsed = time.perf_counter() - started
        try:
            choices = inspect.signature(wrapped).bind_partial(*args, **kwargs).arguments.get(
                "choices", ()
            )
        except TypeError:
            choices = ()
        for choice in choices or ():
            record = getattr(choice, TAG, None)
            if record is not None:
                record.autotune_s += elapsed
                break


# --- feedback saver: close the op ----------------------------------------------------------

def feedback(timings: dict[Any, float], name: str, input_nodes: Any, choices: Any,
             *rest: Any) -> None:
    """Close the op's record; drop rejected choices from the timings Inductor keeps."""
    record = next((getattr(c, TAG, None) for c in (choices or ()) if hasattr(c, TAG)), None)
    if record is None or record.seconds is not None:
        return
    for choice, timing in timings.items():
        label = _choice_name(choice)
        if label not in record.rejected:
            record.timings.setdefault(label, _finite_or_none(timing))
    finite = {c: t for c, t in timings.items()
              if math.isfinite(t) and _choice_name(c) not in record.rejected}
    if finite:
        best = min(finite, key=finite.__getitem__)
        record.winner = _choice_name(best)
        for choice in [c for c in timings if _choice_name(c) in record.rejected]:
            del timings[choice]  # deferred (multi-template/fusion) paths never see them
    _close(record)


def _close(record: OpRecord, benchmarked: bool = True) -> None:
    """Finish a record: its time, the budget settlement, the listeners.

    The time is what precompiling and benchmarking took (the do_autotuning wrapper), or,
    on torch without that method, the time since the op was opened.
    """
    if benchmarked:
        record.seconds = record.autotune_s or (time.perf_counter() - record.started)
    else:
        record.seconds = record.autotune_s
    if record.budget is not None:
        run = sum(1 for v in record.timings.values() if v is not None) + len(record.rejected)
        record.budget.settle(record.reserved_s, record.seconds if run else 0.0, run)
        record.reserved_s = 0.0
    record._references.clear()
    from .report import on_autotune

    on_autotune(record.as_event(), record.settings)
    with _records_lock:
        _records.append(record)
        del _records[:-MAX_RECORDS]
    for listener in list(listeners):
        try:
            listener(record)
        except Exception:
            log.debug("autotune listener failed", exc_info=True)


# --- installation --------------------------------------------------------------------------

def build_patches(selector: Any) -> list[Any]:
    """The autotune hooks for a ``torch._inductor.select_algorithm`` module (what exists)."""
    patches: list[Any] = []
    cls = getattr(selector, "AlgorithmSelectorCache", None)
    if cls is None:
        return patches
    owned = vars(cls)
    if "__call__" in owned:
        patches.append(Patch(cls, "__call__", wrapt.FunctionWrapper(owned["__call__"],
                                                                    _selector_call)))
    if "benchmark_choice" in owned:
        patches.append(Patch(cls, "benchmark_choice",
                             wrapt.FunctionWrapper(owned["benchmark_choice"], _benchmark_choice)))
    if "do_autotuning" in owned:
        patches.append(Patch(cls, "do_autotuning",
                             wrapt.FunctionWrapper(owned["do_autotuning"], _do_autotuning)))
    get_cache = getattr(selector, "get_algorithm_selector_cache", None)
    if callable(get_cache):
        cache = get_cache()
        if hasattr(cache, "preprocessing_fns"):
            patches.append(Append(cache, "preprocessing_fns", preprocess))
        if hasattr(cache, "feedback_saver_fns"):
            patches.append(Append(cache, "feedback_saver_fns", feedback))
    return patches


def config_changes(settings: Settings, config: Any) -> dict[str, Any]:
    """Inductor config for a block: no unverifiable autotune paths; the search space."""
    changes: dict[str, Any] = {}
    if settings.verify:
        wanted = {
            "autotune_in_subproc": False,  # benchmarks in a subprocess escape verification
            "pipeline_max_autotune_gemm": False,  # async subprocess autotuning, same
            "autotune_local_cache": False,  # cached winners would skip verification
            "autotune_remote_cache": False,
        }
        changes.update({k: v for k, v in wanted.items() if hasattr(config, k)})
    if settings.search_space is not None and hasattr(config, "max_autotune_gemm_search_space"):
        changes["max_autotune_gemm_search_space"] = settings.search_space
    return changes


def block_changes(settings: Settings) -> dict[str, Any]:
    """The Inductor config of a block: :func:`config_changes` plus the FX-graph-cache salt
    (cache.py), which wraps the user's current post-grad pass. Built once per
    (settings, user pass): iso.compile enters its settings on every call."""
    import torch._inductor.config as config

    user_pass = getattr(config, "post_grad_custom_post_pass", None)
    key = (settings, id(user_pass))
    cached = _block_changes.get(key)
    if cached is None or cached[0] is not user_pass:
        from .cache import salted_post_pass

        changes = config_changes(settings, config)
        salted = salted_post_pass(user_pass, settings)
        if salted is not None:
            changes["post_grad_custom_post_pass"] = salted
        if len(_block_changes) > 256:
            _block_changes.clear()
        cached = _block_changes[key] = (user_pass, changes)
    return dict(cached[1])


# (settings, id of the user's post-grad pass) -> (that pass, config changes)
_block_changes: dict[tuple[Settings, int], tuple[Any, dict[str, Any]]] = {}


def block_config(settings: Settings) -> Any:
    """A context manager applying :func:`block_changes` in this thread (None if nothing)."""
    import torch._inductor.config as config

    changes = block_changes(settings)
    return config.patch(changes) if changes else None
