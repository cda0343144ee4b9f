"""Hooks into Inductor's autotuner: cap/budget the choices, verify each forced one, record.

Installed with the SM gate (same refcounted patch set) when the torch has the hooks:

- ``AlgorithmSelectorCache.__call__`` wrapper: opens an :class:`OpRecord` for the op, and
  closes it when Inductor picked without benchmarking (sole choice, deterministic);
- a preprocessing fn: ranks the template choices (search.py), keeps ``max_choices`` (and,
  on torch without ``do_autotuning``, what the budget allows), puts the extern (ATen)
  choices first, tags every kept choice with its record;
- ``AlgorithmSelectorCache.do_autotuning`` wrapper: the budget decides here, when the op
  is really benchmarked (at lowering, or later in the scheduler for deferred
  multi-template buffers), and precompiles only what it allows; times the op;
- ``AlgorithmSelectorCache.get_inputs`` / ``generate_example_value`` wrappers: in verified
  ops every random draw gets its own seed (checks/inputs.py), so no two operands are equal;
- ``AlgorithmSelectorCache.benchmark_choice`` wrapper: compares the output each template
  wrote in its timed run with the reference; a mismatch, NaN/Inf or an exception makes
  its timing ``inf`` (never an exception), recording which check rejected it;
- a feedback saver: fails closed (a template timed without a passed check is removed),
  closes the record, settles the budget;
- ``PersistentCache.update_local_cache``: not written inside verified blocks.

Verification applies to the GEMM family the gate opens (``VERIFIED_OPS``); other
autotuned ops (flex attention, ...) pass through untouched, noted "unverified".
The records themselves live in core/records.py.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import logging
import math
import time
from typing import Any

import wrapt

from ..checks.inputs import op_seed, reseed
from ..checks.references import FP64_CHECKED, VERIFIED_OPS, reference_for
from ..checks.verify import Check, compare, fp64_reference, reduction_length
from ..core import records, state
from ..core.patching import Append, Patch
from ..core.records import TAG, OpRecord, close, finite_or_none, settle_budget
from ..core.records import choice_name as _choice_name
from ..core.settings import Settings
from ..policy.search import device_smem_limit, parse_config, problem_from, rank, smem_bytes
from ..torch_plan.compat import (
    benchmarked_as_extern,
    current_plan,
    has_preprocessing_hook,
    infer_selected_choice,
    is_reference,
    selector_cache,
    subgraph_output,
    unpack_selection,
)
from ..torch_plan.hardware import sm_count

log = logging.getLogger("inductor_sm_override")

_CURRENT_OP: contextvars.ContextVar[OpRecord | None] = contextvars.ContextVar(
    "inductor_sm_override_op", default=None
)
# the current selector call's (input_nodes, layout): references for sole choices are bound
# to them (references.py)
_CALL: contextvars.ContextVar[tuple[Any, Any] | None] = contextvars.ContextVar(
    "inductor_sm_override_call", default=None
)
_BUDGET_AT_BENCHMARK = {"on": False}  # set when do_autotuning is wrapped (build_patches)
# while get_inputs of a verified op runs: [record, draws so far]
_DRAWS: contextvars.ContextVar[list | None] = contextvars.ContextVar(
    "inductor_sm_override_draws", default=None)
OWN_INPUTS = {"on": True}  # off: torch's equal draws (benchmarks/verify_overhead.py compares)
# preprocessing fns the toolkit itself runs first where Inductor has no such hook (<= 2.8);
# testing.inject_faults registers here on those releases
extra_preprocessing_fns: list[Any] = []


# --- __call__ wrapper: open the op, close what Inductor picks without benchmarking ---------

def _open_op(name: str, input_nodes: Any, layout: Any, settings: Settings) -> OpRecord:
    record = OpRecord(name=str(name), settings=settings, budget=state.current_budget())
    for node in input_nodes or ():
        try:
            record.shapes.append([int(s) if getattr(s, "is_number", True) else str(s)
                                  for s in node.get_size()])  # symbolic: "s0"
        except Exception:
            record.shapes.append(None)
        record.dtypes.append(str(getattr(node, "get_dtype", lambda: "?")()))
    device = getattr(layout, "device", None)
    record.device = str(device)
    if device is not None and device.type != "cpu":
        try:
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
    record.gemm = record.name in VERIFIED_OPS
    record.verified_op = settings.verify and record.gemm
    record.take_pending()
    record.precompile_timeout = bound.get("precompilation_timeout_seconds")
    if record.budget is not None and record.gemm:
        if _BUDGET_AT_BENCHMARK["on"]:
            # Decide in do_autotuning (deferred ops run it later, in the scheduler): no
            # precompilation at lowering time, do_autotuning precompiles what it allows.
            record.budget_at_benchmark = True
            args, kwargs = _set_timeout(wrapped, args, kwargs, 0)
        else:
            timeout = _bounded_timeout(record.precompile_timeout, record.budget.remaining)
            args, kwargs = _set_timeout(wrapped, args, kwargs, timeout)
    token = _CURRENT_OP.set(record)
    call_token = _CALL.set((bound.get("input_nodes"), bound.get("layout")))
    try:
        if not has_preprocessing_hook(instance):  # <= 2.8: cap, budget and tag from here
            args, kwargs = _preprocessed(wrapped, args, kwargs)
        result = wrapped(*args, **kwargs)
    except BaseException:
        settle_budget(record)  # nothing may stay reserved
        raise
    finally:
        _CALL.reset(call_token)
        _CURRENT_OP.reset(token)
    selection = unpack_selection(result)
    record.deferred = selection.deferred
    if not record.closed and not selection.deferred:
        # Selected without the feedback saver (a sole choice, a deterministic pick, a
        # cache hit): close here. Deferred selections close in feedback().
        chosen = selection.choice or infer_selected_choice(instance, record.kept_choices)
        if chosen is not None:
            record.winner = record.winner or _choice_name(chosen)
        if record.winner_unchecked:
            record.unverified[record.winner] = "taken without a check (not benchmarked)"
        close(record, benchmarked=False)
    return result


def _preprocessed(wrapped: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Run the preprocessing fns on the ``choices`` argument (torch without that hook)."""
    try:
        call = inspect.signature(wrapped).bind(*args, **kwargs)
    except TypeError:
        return args, kwargs
    choices = list(call.arguments.get("choices") or ())
    for fn in list(extra_preprocessing_fns):
        choices = fn(choices)
    call.arguments["choices"] = preprocess(choices)
    return call.args, call.kwargs


def _ensure_hooks(cache: Any) -> None:
    """Put our preprocessing fn / feedback saver back if user code cleared Inductor's lists
    (``clear_preprocessing_fns()``) while a block is active: verification must not lapse."""
    for attr, fn in (("preprocessing_fns", preprocess), ("feedback_saver_fns", feedback)):
        hooks = getattr(cache, attr, None)
        if isinstance(hooks, list) and not any(h is fn for h in hooks):
            hooks.append(fn)


def _bounded_timeout(given: Any, remaining: float) -> int:
    """The precompilation timeout bounded by the remaining budget (at least 1 s)."""
    return max(1, int(min(given or 3600, max(remaining, 0.0) + 1)))


def _set_timeout(wrapped: Any, args: tuple, kwargs: dict, timeout: int) -> tuple[tuple, dict]:
    """Set the ``precompilation_timeout_seconds`` argument (where the method has it)."""
    names = list(inspect.signature(wrapped).parameters)
    if "precompilation_timeout_seconds" not in names:
        return args, kwargs
    index = names.index("precompilation_timeout_seconds")
    if len(args) > index:
        args = (*args[:index], timeout, *args[index + 1:])
    else:
        kwargs = {**kwargs, "precompilation_timeout_seconds": timeout}
    return args, kwargs


# --- preprocessing fn: rank, cap, prune, budget, tag ---------------------------------------

def preprocess(choices: list[Any]) -> list[Any]:
    """Keep every extern choice first, then the best ``max_choices`` templates (and what the
    budget allows where it decides here). Ops outside :data:`VERIFIED_OPS` are only tagged."""
    settings = state.current()
    if settings is None:
        return choices
    record = _CURRENT_OP.get()
    if record is None:  # not opened by the __call__ wrapper: treat as a GEMM (conservative)
        record = OpRecord(name="?", settings=settings, budget=state.current_budget(),
                          gemm=True, verified_op=settings.verify)
    names = {id(c): _choice_name(c) for c in choices}
    record.offered = [names[id(c)] for c in choices]
    if not record.gemm:
        return _tag(record, list(choices), names)
    if record.verified_op:
        for choice_filter in list(records.choice_filters):  # the fleet's shared decisions
            choices = choice_filter(record, list(choices))
    externs = [c for c in choices if is_reference(c)]
    templates = [c for c in choices if not is_reference(c)]
    record.externs = externs
    problem = None
    if templates:
        first = templates[0]
        problem = problem_from(getattr(first, "layout", None),
                               getattr(first, "input_nodes", ()), record.sms or 1)
    ranked = _prune_smem(record, rank(templates, problem), problem, names)
    keep = len(ranked)
    if settings.max_choices is not None and settings.max_choices < keep:
        for choice in ranked[settings.max_choices:]:
            record.dropped[names[id(choice)]] = "cap"
        keep = settings.max_choices
    if record.budget is not None and not record.budget_at_benchmark:
        allowed, reserved = record.budget.allowance(keep)
        record.reserved_s = reserved
        for choice in ranked[allowed:keep]:
            record.dropped[names[id(choice)]] = "budget"
        keep = allowed
    elif record.budget is not None and record.budget.remaining <= 0:
        for choice in ranked[:keep]:  # already spent: no template, even when benchmarked later
            record.dropped[names[id(choice)]] = "budget"
        keep = 0
    if not externs and keep == 0 and ranked:
        reference = _reference(record, names)
        if reference is not None and record.verified_op:
            record.externs = [reference]
            record.note(f"no template allowed and no extern choice: the reference "
                        f"{names[id(reference)]} added by the toolkit is used instead")
            return _tag(record, [reference], names)
        keep = 1  # Inductor needs a choice; there is no fallback to keep instead
        record.dropped.pop(names[id(ranked[0])], None)
        record.note("no extern choice: the best-ranked template was kept")
    return _tag(record, _check_sole(record, externs + ranked[:keep], names), names)


def _reference(record: OpRecord, names: dict[int, str]) -> Any | None:
    """An extern reference for this op on the selector call's inputs (references.py)."""
    call = _CALL.get()
    if call is None:
        return None
    reference = reference_for(record.name, *call)
    if reference is not None:
        names[id(reference)] = _choice_name(reference)
    return reference


def _check_sole(record: OpRecord, kept: list[Any], names: dict[int, str]) -> list[Any]:
    """Templates that would be taken unchecked get a reference to be checked against.

    A sole template is taken unbenchmarked (so never checked), and templates without an
    extern in an op that has no fp64 evaluation are only noted "no reference". Add the
    op's extern reference (references.py): Inductor benchmarks it with them and each
    template is checked against its output. The reference leaves the timings again when a
    template passed (feedback), so torch's pick among checked templates stands, and it
    replaces them when none did."""
    if not record.verified_op or not kept or any(is_reference(c) for c in kept):
        return kept
    import torch._inductor.config as config

    # deterministic mode: Inductor picks unbenchmarked (2.13: the first ExternKernelCaller,
    # else choices[0]; 2.11: choices[0]): the reference goes first, so it is what is taken
    deterministic = bool(getattr(config, "deterministic", False))
    if len(kept) > 1 and record.name in FP64_CHECKED and not deterministic:
        return kept  # benchmarked and checked against the fp64 evaluation
    what = "sole choice" if len(kept) == 1 else "no extern choice"
    reference = _reference(record, names)
    if reference is None:
        if len(kept) == 1:
            record.note(f"sole choice: no reference for {record.name} on this rank; taken "
                        "without a check (unverified)")
        return kept
    record.externs = [reference]
    record.reference_added = names[id(reference)]
    record.note(f"deterministic mode (no benchmarking): the reference {record.reference_added}"
                " added by the toolkit replaces the templates" if deterministic else
                f"{what}: checked here against the reference {record.reference_added} added "
                "by the toolkit, which is used only if no template passes its check")
    return [reference, *kept]


def _tag(record: OpRecord, kept: list[Any], names: dict[int, str]) -> list[Any]:
    record.kept = [names[id(c)] for c in kept]
    record.kept_choices = list(kept)
    for choice in kept:
        try:
            setattr(choice, TAG, record)
        except Exception:
            record.note(f"could not tag {names[id(choice)]}")
    return kept


def _prune_smem(record: OpRecord, ranked: list[Any], problem: Any,
                names: dict[int, str]) -> list[Any]:
    """Drop templates whose shared memory cannot fit the device (the ranking model's
    estimate; used where torch has no pruning switch of its own)."""
    if problem is None or _torch_prunes_smem() or not record.device.startswith("cuda"):
        return ranked
    limit = device_smem_limit(record.device)
    if limit is None:
        return ranked
    kept = []
    for choice in ranked:
        cfg = parse_config(choice)
        if cfg is not None and smem_bytes(cfg, problem.itemsize) > limit:
            record.dropped[names[id(choice)]] = "smem"
        else:
            kept.append(choice)
    if len(kept) < len(ranked):
        record.note(f"shared memory: {len(ranked) - len(kept)} templates need more than "
                    f"the device's {limit} bytes per block (estimate)")
    return kept


def _torch_prunes_smem() -> bool:
    import torch._inductor.config as config

    return bool(getattr(config, "max_autotune_prune_choices_based_on_shared_mem", False))


def _record_torch_pruning(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    kept = wrapped(*args, **kwargs)
    if state.current() is None:
        return kept
    try:
        configs = args[0] if args else kwargs["configs"]
        survivors = {id(c) for c in kept}
        labels = [_config_label(c) for c in configs if id(c) not in survivors]
        for label in labels:
            records.pend("dropped", (label, "smem"))
        if labels:
            records.pend("note", f"shared memory: torch pruned {len(labels)} configs over the "
                         "device's limit (max_autotune_prune_choices_based_on_shared_mem)")
    except Exception:
        log.debug("could not record torch's shared-memory pruning", exc_info=True)
    return kept


def _config_label(cfg: Any) -> str:
    parts = [getattr(cfg, f, "?") for f in ("block_m", "block_n", "block_k")]
    return (f"config BLOCK {parts[0]}x{parts[1]}x{parts[2]} "
            f"stages={getattr(cfg, 'num_stages', '?')} warps={getattr(cfg, 'num_warps', '?')}")


# --- do_autotuning wrapper: the budget decides here; time the op ---------------------------

def _do_autotuning(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    try:
        call = inspect.signature(wrapped).bind(*args, **kwargs)
    except TypeError:
        return wrapped(*args, **kwargs)
    choices = list(call.arguments.get("choices") or ())
    record = next((getattr(c, TAG) for c in choices if hasattr(c, TAG)), None)
    if record is None:
        return wrapped(*args, **kwargs)
    if record.budget_at_benchmark:
        call.arguments["choices"], precompile = _budgeted(instance, record, choices, call)
        if precompile is not None:
            call.arguments["precompile_fn"] = precompile
    started = record.running_since = time.perf_counter()
    try:
        return wrapped(*call.args, **call.kwargs)
    finally:
        record.running_since = None
        record.autotune_s += time.perf_counter() - started
        if not record.closed:
            settle_budget(record)  # no feedback saver ran (raised): release, charge


def _budgeted(selector: Any, record: OpRecord, choices: list[Any],
              call: inspect.BoundArguments) -> tuple[list[Any], Any]:
    """The choices the budget allows now, and a precompile fn for just those."""
    if record.budget_decided:  # another hint_override of the same op: same choices
        allowed_names = set(record.kept)
        return [c for c in choices if _choice_name(c) in allowed_names], None
    record.budget_decided = True
    refs = [c for c in choices if is_reference(c)]
    templates = [c for c in choices if not is_reference(c)]
    allowed, reserved = record.budget.allowance(len(templates))
    record.reserved_s = reserved
    if not refs and allowed == 0 and templates:
        allowed = 1
        record.note("no extern choice: the best-ranked template was kept")
    for choice in templates[allowed:]:
        record.dropped[_choice_name(choice)] = "budget"
    kept = refs + templates[:allowed]
    record.kept = [_choice_name(c) for c in kept]
    record.kept_choices = list(kept)
    timeout = _bounded_timeout(record.precompile_timeout, record.budget.remaining + reserved)
    try:
        precompile = selector.make_precompile_fn(
            kept, call.arguments["name"], call.arguments["inputs_key"],
            precompilation_timeout_seconds=timeout,
        )
    except Exception:
        log.debug("could not rebuild the precompile fn", exc_info=True)
        precompile = None
    return kept, precompile


# --- benchmark_choice wrapper: verify the timed output -------------------------------------

def _output_view(autotune_args: Any) -> Any:
    """The output window every choice writes (torch's VERIFY reads the same view): the
    extern tensor carries the layout offset, which Triton kernels add to their base ``out``."""
    return autotune_args.extern.output_tensor


def _compute_reference(record: OpRecord, autotune_args: Any) -> tuple[Any, str] | None:
    inputs, out = list(autotune_args.extern.input_tensors), _output_view(autotune_args)
    for extern in record.externs:
        try:
            fn = extern.to_callable()
            result = out.clone()
            if getattr(extern, "has_out_variant", True):
                fn(*inputs, out=result)
            else:
                result.copy_(fn(*inputs))
            return result, f"extern {_choice_name(extern)}"
        except Exception as exc:  # try the next extern, then fp64
            record.note(f"reference from {_choice_name(extern)} failed: {exc!r}"[:200])
    try:
        wide = fp64_reference(record.name, inputs)
    except Exception:
        wide = None
    return (wide, "fp64") if wide is not None else None


def _poison(tensor: Any) -> None:
    """Fill the window the check reads, so a kernel that writes nothing cannot pass on the
    previous choice's output (nor on the zeros torch's ``benchmark_choice`` writes)."""
    try:
        if tensor.is_floating_point():
            tensor.fill_(float("nan"))
        elif tensor.dtype.is_signed:
            tensor.fill_(-(2 ** 31) + 7 if tensor.element_size() >= 4 else -77)
    except Exception:
        log.debug("could not poison the output window", exc_info=True)


@contextlib.contextmanager
def _poisoned_when_run(choice: Any, window: Any) -> Any:
    """Poison ``window`` when the choice's kernel starts, i.e. after torch's
    ``benchmark_choice`` has run ``output.zero_()`` (2.11 select_algorithm.py:3724, 2.13
    :4846), which would otherwise overwrite a fill made before it when the output has no
    offset. Done by shadowing ``benchmark`` on the choice object (the innermost one under
    proxies) for this call only."""
    holder = choice
    while isinstance(holder, wrapt.ObjectProxy):
        holder = holder.__wrapped__
    try:
        own = vars(holder)
    except TypeError:  # no instance dict: poison now (best effort)
        _poison(window)
        yield
        return
    had, previous = "benchmark" in own, own.get("benchmark")
    original = holder.benchmark

    def benchmark(*args: Any, **kwargs: Any) -> Any:
        _poison(window)
        return original(*args, **kwargs)

    own["benchmark"] = benchmark
    try:
        yield
    finally:
        if had:
            own["benchmark"] = previous
        else:
            own.pop("benchmark", None)


def _benchmark_choice(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> float:
    bound = dict(zip(("choice", "autotune_args"), args, strict=False))
    bound.update(kwargs)
    choice, autotune_args = bound.get("choice"), bound.get("autotune_args")
    record: OpRecord | None = getattr(choice, TAG, None)
    if record is None or autotune_args is None:
        return wrapped(*args, **kwargs)
    name = _choice_name(choice)
    if not record.gemm:
        timing = wrapped(*args, **kwargs)  # outside the GEMM family: untouched
        record.timings[name] = finite_or_none(timing)
        return timing
    if is_reference(choice):
        timing = wrapped(*args, **kwargs)
        with contextlib.suppress(Exception):
            record.references.setdefault(id(autotune_args), (autotune_args, (
                _output_view(autotune_args).clone(), f"extern {name}")))
        record.timings[name] = finite_or_none(timing)
        return timing
    poison = record.verified_op and not benchmarked_as_extern(choice)
    try:
        with _poisoned_when_run(choice, _output_view(autotune_args)) if poison else \
                contextlib.nullcontext():
            timing = wrapped(*args, **kwargs)
    except Exception as exc:  # incl. torch's own VERIFY AssertionError: reject, never abort
        torch_check = isinstance(exc, AssertionError) and bool(
            getattr(current_plan().selector, "VERIFY", None))
        record.reject(name, f"{type(exc).__name__}: {exc}"[:300],
                      by="torch" if torch_check else "crash")
        return math.inf
    if not record.verified_op:
        record.timings[name] = finite_or_none(timing)
        return timing
    outcome = _check(record, autotune_args, name, choice)
    if outcome is not None:
        record.reject(name, outcome)
        return math.inf
    record.timings[name] = finite_or_none(timing)
    return timing


def _produced(choice: Any, autotune_args: Any) -> Any:
    """What the choice computed in its timed run: the output window it wrote, or, for a
    choice torch benchmarks as extern without writing ``out`` (``SubgraphChoiceCaller``:
    decompose_k), what its compiled subgraph returns for the same extern inputs."""
    if benchmarked_as_extern(choice):
        return subgraph_output(choice, list(autotune_args.extern.input_tensors))
    return _output_view(autotune_args)


def _check(record: OpRecord, autotune_args: Any, name: str, choice: Any = None) -> str | None:
    """None when the choice's timed output matches the reference (or there is no reference:
    then it is noted unverified), else the reason for rejecting it."""
    if id(autotune_args) not in record.references:  # args kept alive: ids stay unique
        record.references[id(autotune_args)] = (autotune_args,
                                                _compute_reference(record, autotune_args))
    reference = record.references[id(autotune_args)][1]
    if reference is None:
        record.unverified[name] = "no reference"
        record.checks[name] = {"passed": None, "reason": "no reference"}
        return None
    expected, source = reference
    try:
        actual = _output_view(autotune_args) if choice is None else \
            _produced(choice, autotune_args)
    except Exception as exc:  # its output cannot be read: never accepted unchecked
        return f"could not read its output: {type(exc).__name__}: {exc}"[:300]
    k = reduction_length(record.name, [tuple(t.shape) for t in autotune_args.extern.input_tensors])
    try:
        result: Check = compare(actual, expected, record.settings.rtol, record.settings.atol, k)
    except Exception as exc:
        return f"verification failed: {type(exc).__name__}: {exc}"[:300]
    record.checks[name] = {**result.as_dict(), "reference": source}
    return None if result.passed else f"mismatch vs {source}: {result.reason}"


# --- get_inputs / generate_example_value wrappers: the check's own operands ----------------

def _get_inputs(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """In a verified op each draw of torch's ``get_inputs`` is refilled from its own seed."""
    choices = args[0] if args else kwargs.get("choices")
    record = next((getattr(c, TAG) for c in choices or () if hasattr(c, TAG)), None)
    if record is None or not record.verified_op or not OWN_INPUTS["on"]:
        return wrapped(*args, **kwargs)
    token = _DRAWS.set([record, 0])
    try:
        return wrapped(*args, **kwargs)
    finally:
        _DRAWS.reset(token)


def _generate_example_value(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    value = wrapped(*args, **kwargs)  # torch's size, stride, offset and allocation
    draws = _DRAWS.get()
    if draws is None:
        return value
    record, index = draws
    draws[1] += 1
    try:
        return reseed(value, op_seed(record.name, record.shapes, record.dtypes, index))
    except Exception as exc:  # torch's draw stands (the old limit), noted
        record.note(f"inputs: torch's draw kept ({exc!r})"[:200])
        return value


# --- feedback saver: fail closed, close the op ---------------------------------------------

UNVERIFIED_PATH = "unverified path: timed without the toolkit's check"


def feedback(timings: dict[Any, float], name: str, input_nodes: Any, choices: Any,
             *rest: Any) -> None:
    """Remove rejected and unchecked templates from the timings Inductor keeps; close."""
    record = next((getattr(c, TAG, None) for c in (choices or ()) if hasattr(c, TAG)), None)
    if record is None:
        return
    _fail_closed(record, timings)
    if record.reference_added is not None:
        _drop_added_reference(record, timings)
    for choice, timing in timings.items():
        label = _choice_name(choice)
        if label not in record.rejected:
            record.timings.setdefault(label, finite_or_none(timing))
    if not record.verified_op and record.settings.verify:
        record.note(f"unverified: no reference ({record.name} is outside the verified GEMM "
                    "family; its choices pass through)")
    if record.closed:
        return  # a later hint_override of the same op: rejections removed above
    finite = {c: t for c, t in timings.items() if math.isfinite(t)}
    if finite:
        record.winner = _choice_name(min(finite, key=finite.__getitem__))
    close(record)


def _fail_closed(record: OpRecord, timings: dict[Any, float]) -> None:
    """Delete every rejected choice and, in verified ops, every template without a passed
    check (deferred multi-template and fusion paths never see them). Templates that merely
    had no reference stay only when nothing else is left (no extern to fall back on)."""
    doomed, no_reference = [], []
    for choice, timing in timings.items():
        label = _choice_name(choice)
        if is_reference(choice) or not record.gemm:
            continue
        if label in record.rejected:
            doomed.append(choice)
            continue
        if not record.verified_op:
            continue
        check = record.checks.get(label)
        if check is not None and check.get("passed") is True:
            continue
        if check is not None and check.get("passed") is None:
            no_reference.append(choice)
        elif math.isfinite(timing):
            record.reject(label, UNVERIFIED_PATH)
            doomed.append(choice)
    for choice in doomed:
        del timings[choice]
    if no_reference and len(no_reference) == len(timings):
        record.note("unverified: no reference and no extern choice; torch's pick stands")
        return
    for choice in no_reference:
        record.unverified[_choice_name(choice)] = "no reference: removed (an extern remains)"
        record.timings[_choice_name(choice)] = None
        del timings[choice]


def _drop_added_reference(record: OpRecord, timings: dict[Any, float]) -> None:
    """The reference added for a sole template (``_check_sole``) competes only if the
    template failed: when a checked template is left, the reference leaves the timings
    Inductor picks from (its time stays in the record)."""
    passed = [c for c, t in timings.items() if not is_reference(c) and math.isfinite(t)
              and (record.checks.get(_choice_name(c)) or {}).get("passed") is True]
    if not passed:
        return
    for choice in [c for c in timings if _choice_name(c) == record.reference_added]:
        record.timings[record.reference_added] = finite_or_none(timings[choice])
        del timings[choice]


# --- the on-disk autotune cache ------------------------------------------------------------

def _update_local_cache(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """``PersistentCache.lookup`` rewrites the cache file even with the local cache off
    (then with only this op's timings): not inside verified blocks."""
    settings = state.current()
    if settings is not None and settings.verify:
        return None
    return wrapped(*args, **kwargs)


# --- installation --------------------------------------------------------------------------

def build_patches(plan: Any) -> list[Any]:
    """The autotune hooks for this torch's ``select_algorithm`` module (what exists)."""
    patches: list[Any] = []
    selector = plan.selector
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
    if "get_inputs" in owned and "generate_example_value" in owned:
        patches += [Patch(cls, attr, wrapt.FunctionWrapper(owned[attr], wrapper)) for attr, wrapper
                    in (("get_inputs", _get_inputs),
                        ("generate_example_value", _generate_example_value))]
    _BUDGET_AT_BENCHMARK["on"] = "do_autotuning" in owned and "make_precompile_fn" in owned
    if "do_autotuning" in owned:
        patches.append(Patch(cls, "do_autotuning",
                             wrapt.FunctionWrapper(owned["do_autotuning"], _do_autotuning)))
    persistent = getattr(selector, "PersistentCache", None)
    writer = getattr(persistent, "update_local_cache", None)
    if persistent is not None and callable(writer):
        raw = inspect.getattr_static(persistent, "update_local_cache")
        patches.append(Patch(persistent, "update_local_cache",
                             wrapt.FunctionWrapper(raw, _update_local_cache)))
    patches += _pruning_patches()
    cache = selector_cache(selector)
    if cache is not None:
        if hasattr(cache, "preprocessing_fns"):
            patches.append(Append(cache, "preprocessing_fns", preprocess))
        if hasattr(cache, "feedback_saver_fns"):
            patches.append(Append(cache, "feedback_saver_fns", feedback))
    return patches


def _pruning_patches() -> list[Any]:
    """Record what torch's shared-memory pruning removes (where it exists)."""
    try:
        from torch._inductor.template_heuristics import triton as heuristics
    except Exception:
        return []
    base = getattr(heuristics, "BaseConfigHeuristic", None)
    raw = vars(base).get("_prune_exceeding_max_shared_mem_configs") if base else None
    if raw is None:
        return []
    return [Patch(base, "_prune_exceeding_max_shared_mem_configs",
                  wrapt.FunctionWrapper(raw, _record_torch_pruning))]
