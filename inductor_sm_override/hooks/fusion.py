"""Fused template kernels: checked against the unfused path before the scheduler keeps them.

On CUDA, Inductor defers GEMMs as ``MultiTemplateBuffer``s and its scheduler decides
epilogue (and prologue) fusion in ``Scheduler.speedup_by_fusion`` (2.11
``scheduler.py:3984``, 2.13 ``:5262``): it compiles the best template choice together with
the pointwise nodes, times it through ``benchmark_codegened_module`` and, when faster,
``finalize_as_triton_caller``s the template inside the decision callable it returns. That
fused kernel is the one that runs, and ``benchmark_choice`` never saw it.

Inside verified blocks this module wraps ``speedup_by_fusion``. When a decision fuses a
Triton template (deferred or not) with other nodes, before it is accepted:

- the fused kernel is compiled the way the scheduler compiles it (``compile_kernel`` of
  the fused node list, the chosen template swapped in) and run on its benchmark harness's
  ``get_args()`` (floats reseeded per op; copies keep strides and padding);
- the unfused reference path runs on the same inputs: each prologue node's own kernel,
  the op's extern (ATen) choice for the GEMM (the unfused template kernel where the op
  kept no extern), then each epilogue node's own kernel (with the GEMM output also shifted
  by -/+ its tolerance: the band an element may move, SAFETY.md);
- every buffer the fused kernel writes that the reference computed is compared with the
  per-dtype tolerances of verify.py plus that band.

On a mismatch, an exception or anything that cannot be checked (atomic-add epilogues,
whose random integer inputs torch itself refuses to benchmark; per-hint kernels of
``multi_kernel_hints``) the fusion is declined: the template's state is put back as it was
before the decision, so the scheduler keeps the unfused, already verified choice and the
epilogue runs as its own kernel. Fusion stays on. Each check is recorded on the op
(``iso.decisions()[i]["fused"]``) and as a ``fusion`` report event.

Which buffer each kernel argument is comes from the kernel itself: while a check compiles
a kernel, ``TritonKernel.codegen_kernel_benchmark`` (which writes ``get_args()`` from
``self.args.python_argdefs()``) is wrapped to note the argument buffers and which of them
the kernel writes.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import inspect
import logging
import math
from typing import Any

import wrapt

from ..checks.inputs import op_seed, reseed, strided_copy
from ..checks.verify import compare, reduction_length
from ..core import events, state
from ..core.patching import Patch
from ..core.records import TAG, choice_name
from ..torch_plan.compat import is_reference

log = logging.getLogger("inductor_sm_override")



class UncheckableError(Exception):
    """The fused kernel cannot be compared with a reference: the fusion is declined."""


@dataclasses.dataclass(frozen=True)
class KernelArgs:
    """The buffers behind a generated kernel's arguments, in ``get_args()`` order."""

    names: tuple[str, ...]
    written: frozenset[str]
    inplace: dict[str, tuple[str, ...]]  # argument name -> every buffer it stands for

    def source(self, name: str) -> str:
        """The buffer whose value the argument holds before the kernel runs."""
        return self.inplace.get(name, (name,))[0]


_CAPTURE: contextvars.ContextVar[list[KernelArgs] | None] = contextvars.ContextVar(
    "inductor_sm_override_kernel_args", default=None)


def kernel_args(kernel: Any) -> KernelArgs:
    """Read a Triton kernel's argument buffers (``kernel.args``, torch's ``KernelArgs``)."""
    args = kernel.args
    _defs, call_args, _sig, _types = args.python_argdefs()
    inplace: dict[str, tuple[str, ...]] = {}
    entries = {id(entry): entry for entry in args.inplace_buffers.values()}  # lists inside
    for entry in entries.values():
        names = tuple(getattr(entry, "other_names", ()) or ())
        if names:
            inplace[names[-1]] = names
    written = set(inplace) | {str(n) for n in args.output_buffers}
    return KernelArgs(tuple(str(c) for c in call_args), frozenset(written), inplace)


def _note_kernel_args(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    result = wrapped(*args, **kwargs)
    found = _CAPTURE.get()
    if found is not None:
        try:
            found.append(kernel_args(instance))
        except Exception:
            log.debug("could not read a kernel's arguments", exc_info=True)
    return result


@contextlib.contextmanager
def capturing() -> Any:
    """Collect the :class:`KernelArgs` of the kernels generated inside."""
    found: list[KernelArgs] = []
    token = _CAPTURE.set(found)
    try:
        yield found
    finally:
        _CAPTURE.reset(token)


def compiled(scheduler: Any, nodes: list[Any], hint_override: Any = None) -> tuple[Any, KernelArgs]:
    """``scheduler.compile_kernel(nodes)`` (waited for) and its kernel's argument buffers."""
    with capturing() as found:
        if hint_override is None:
            future, module = scheduler.compile_kernel(nodes)
        else:
            future, module = scheduler.compile_kernel(nodes, hint_override=hint_override)
    if future is not None:
        future.result()
    if len(found) != 1:
        raise UncheckableError(f"{len(found)} kernels generated for {len(nodes)} nodes")
    return module, found[0]


# --- the check ---------------------------------------------------------------------------

@dataclasses.dataclass
class FusedCheck:
    """The outcome of checking one fused template kernel."""

    choice: str
    nodes: list[str]
    passed: bool
    reason: str = ""
    reference: str = ""
    compared: list[str] = dataclasses.field(default_factory=list)
    max_abs: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _split(nodes: list[Any]) -> tuple[list[Any], Any, list[Any]]:
    """(prologue, template, epilogue) of a fused node list (as the scheduler splits it)."""
    index = next(i for i, n in enumerate(nodes) if n.is_template())
    return nodes[:index], nodes[index], nodes[index + 1:]


def _is_multi(template: Any) -> bool:
    return hasattr(template, "swap_as_triton_caller") and hasattr(template, "choices")


def _swapped(template: Any, choice: Any) -> Any:
    if choice is not None and _is_multi(template):
        return template.swap_as_triton_caller(choice)
    return contextlib.nullcontext()


def _ints(values: Any) -> list[int]:
    out = []
    for value in values:
        try:
            out.append(int(value))
        except TypeError:
            from torch._inductor.virtualized import V

            out.append(int(V.graph.sizevars.size_hint(value)))
    return out


def _run(module: Any, info: KernelArgs, env: dict[str, Any]) -> None:
    """Run a kernel module on ``env``'s buffers; what it writes goes back into ``env``."""
    import torch

    args = list(module.get_args())
    for index, name in enumerate(info.names[:len(args)]):
        if isinstance(args[index], torch.Tensor) and info.source(name) in env:
            args[index] = strided_copy(env[info.source(name)])
    module.call(list(args))  # a generated call() may clear the list it gets
    for index, name in enumerate(info.names[:len(args)]):
        if name in info.written:
            env[name] = args[index]


def _extern_of(template: Any) -> Any:
    return next((c for c in getattr(template, "choices", ()) or () if is_reference(c)), None)


def _run_extern(extern: Any, template: Any, env: dict[str, Any]) -> None:
    """The op's extern choice on ``env``'s inputs, into the template's output buffer."""
    import torch

    inputs = []
    for node in extern.input_nodes:
        name = node.get_name()
        if name not in env:
            raise UncheckableError(f"the extern's input {name} is not a kernel argument")
        layout = node.get_layout()
        inputs.append(torch.as_strided(env[name], _ints(layout.size), _ints(layout.stride),
                                       _ints([layout.offset])[0]))
    layout = template.get_layout()
    out = torch.empty_strided(_ints(layout.size), _ints(layout.stride), dtype=layout.dtype,
                              device=inputs[0].device if inputs else layout.device)
    fn = extern.to_callable()
    if getattr(extern, "has_out_variant", True):
        fn(*inputs, out=out)
    else:
        out.copy_(fn(*inputs))
    env[template.get_name()] = out


def check_fused(scheduler: Any, nodes: list[Any], template: Any, choice: Any,
                settings: Any) -> FusedCheck:
    """Compare the fused kernel of ``nodes`` (``choice`` swapped into ``template``) with the
    unfused path on the same seeded inputs."""
    import torch

    names = [n.get_name() for n in nodes]
    label = choice_name(choice) if choice is not None else template.get_name()
    result = FusedCheck(choice=label, nodes=names, passed=False)
    record = _record_of(template)
    try:
        any_atomic = getattr(scheduler, "_any_atomic_add", None)
        if callable(any_atomic) and any_atomic(nodes):
            raise UncheckableError("atomic-add epilogue: random integer inputs are not safe to run "
                              "(torch does not benchmark it either)")
        prologue, template_node, epilogue = _split(nodes)
        with _swapped(template, choice):
            fused, fused_info = compiled(scheduler, nodes, getattr(choice, "hint_override", None))
        fused_args = list(fused.get_args())
        identity = (getattr(record, "name", "?"), getattr(record, "shapes", None), "fused")
        inputs: dict[str, Any] = {}
        for index, name in enumerate(fused_info.names[:len(fused_args)]):
            value = fused_args[index]
            if isinstance(value, torch.Tensor):
                reseed(value, op_seed(*identity, index), integers=False)
                if name not in fused_info.written or name in fused_info.inplace:
                    inputs[fused_info.source(name)] = strided_copy(value)
        before = [compiled(scheduler, [snode]) for snode in prologue]
        after = [compiled(scheduler, [snode]) for snode in epilogue]
        extern = _extern_of(template)
        if extern is None:
            with _swapped(template, choice):
                gemm = compiled(scheduler, [template_node])
            result.reference = "unfused template + unfused kernels"
        else:
            result.reference = f"extern {choice_name(extern)} + unfused kernels"
        k = reduction_length(*identity[:2])
        out_name = template.get_name()

        def reference(shift: int) -> dict[str, Any]:
            env = dict(inputs)
            for kernel in before:
                _run(*kernel, env)
            if extern is None:
                _run(*gemm, env)
            else:
                _run_extern(extern, template, env)
            if shift:  # the GEMM output as far off as the unfused check accepts
                out = env[out_name]
                bound = compare(out, out, settings.rtol, settings.atol, k)
                band = bound.atol + bound.rtol * out.abs()
                env[out_name] = (out + shift * band).to(out.dtype)
            for kernel in after:
                _run(*kernel, env)
            return env

        env = reference(0)
        shifted = [reference(-1), reference(1)] if epilogue else []
        fused.call(list(fused_args))
        worst = 0.0
        for index, name in enumerate(fused_info.names[:len(fused_args)]):
            if name not in fused_info.written or name not in env:
                continue
            slack = None if name == out_name or not shifted else torch.stack(
                [(s[name].float() - env[name].float()).abs() for s in shifted]).amax(0)
            check = compare(fused_args[index], env[name], settings.rtol, settings.atol, k,
                            slack)
            result.compared.append(name)
            worst = max(worst, check.max_abs)
            if not check.passed:
                result.reason = f"mismatch vs {result.reference} in {name}: {check.reason}"
                result.max_abs = check.max_abs if math.isfinite(check.max_abs) else None
                return result
        if not result.compared:
            raise UncheckableError("the fused kernel writes no buffer the reference computed")
        result.passed, result.max_abs = True, worst
    except UncheckableError as exc:
        result.reason = f"not checkable: {exc}"
    except Exception as exc:  # a failing fused kernel is a rejected one
        result.reason = f"{type(exc).__name__}: {exc}"[:300]
    return result


# --- the decision -------------------------------------------------------------------------

def _template_of(node1: Any, node2: Any) -> Any:
    """The Triton template buffer a fusion of these two scheduler nodes would fuse."""
    from torch._inductor import ir

    for node in (node1, node2):
        try:
            if node.is_template():
                template = node.get_template_node()
                if isinstance(template, ir.TritonTemplateBuffer):
                    return template
        except Exception:
            continue
    return None


def _saved(template: Any) -> dict[str, Any]:
    saved = {"make_kernel_render": getattr(template, "make_kernel_render", None)}
    if hasattr(template, "_make_kernel_renders"):
        saved["_make_kernel_renders"] = dict(template._make_kernel_renders)
    if hasattr(template, "_choice_timings"):
        saved["_choice_timings"] = dict(template._choice_timings)
    return saved


def _restore(template: Any, saved: dict[str, Any]) -> None:
    for attr, value in saved.items():
        setattr(template, attr, value)


def _chosen(template: Any) -> Any:
    """The choice a multi-template buffer was finalized as (None: not a multi-template)."""
    if not _is_multi(template):
        return None
    render = getattr(template, "make_kernel_render", None)
    for choice in template.choices:
        get = getattr(choice, "get_make_kernel_render", None)
        if callable(get) and render is not None and get() is render:
            return choice
    raise UncheckableError("the fused choice cannot be told")


def _record_of(template: Any) -> Any:
    for choice in getattr(template, "choices", ()) or ():
        record = getattr(choice, TAG, None)
        if record is not None:
            return record
    return None


def _keep(scheduler: Any, node1: Any, node2: Any, template: Any, saved: dict[str, Any],
          settings: Any) -> bool:
    """Check the fusion just decided; undo it (back to ``saved``) when it fails."""
    nodes = [*node1.get_nodes(), *node2.get_nodes()]
    try:
        choice = _chosen(template)
        import torch._inductor.config as config

        if _is_multi(template) and getattr(config, "multi_kernel_hints", None):
            raise UncheckableError("multi_kernel_hints: the per-hint fused kernels are not checked")
        outcome = check_fused(scheduler, nodes, template, choice, settings)
    except UncheckableError as exc:
        outcome = FusedCheck(choice="?", nodes=[n.get_name() for n in nodes], passed=False,
                             reason=f"not checkable: {exc}")
    _remember(template, outcome, settings)
    if not outcome.passed:
        _restore(template, saved)
        log.info("inductor_sm_override: fused kernel %s rejected (%s); the unfused choice "
                 "stays", outcome.choice, outcome.reason)
    return outcome.passed


def _remember(template: Any, outcome: FusedCheck, settings: Any) -> None:
    entry = outcome.as_dict()
    record = _record_of(template)
    if record is not None:
        record.fused.append(entry)
    events.publish(settings, {"event": "fusion", "op": getattr(record, "name", None),
                              "template": template.get_name(), **entry})


def _speedup_by_fusion(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    settings = state.current()
    if settings is None or not settings.verify:
        return wrapped(*args, **kwargs)
    try:
        bound = inspect.signature(wrapped).bind(*args, **kwargs).arguments
        node1, node2 = bound["node1"], bound["node2"]
        template = _template_of(node1, node2)
    except Exception:
        return wrapped(*args, **kwargs)
    if template is None:
        return wrapped(*args, **kwargs)
    saved = _saved(template)
    result = wrapped(*args, **kwargs)
    decide = getattr(result, "callable_fn", None)
    if decide is not None:
        def checked() -> bool:
            before = _saved(template)  # the decision runs later: its own starting state
            if not decide():
                return False
            return _keep(instance, node1, node2, template, before, settings)

        result.callable_fn = checked
        return result
    if getattr(result, "should_fuse", False) and \
            not _keep(instance, node1, node2, template, saved, settings):
        return type(result).fuse(False)
    return result


def build_patches(plan: Any) -> list[Patch]:
    """Wrap ``Scheduler.speedup_by_fusion`` and ``TritonKernel.codegen_kernel_benchmark``
    where both exist (2.11, 2.13)."""
    try:
        from torch._inductor.codegen.triton import TritonKernel
        from torch._inductor.scheduler import Scheduler
    except Exception:
        return []
    decide = vars(Scheduler).get("speedup_by_fusion")
    bench = vars(TritonKernel).get("codegen_kernel_benchmark")
    if decide is None or bench is None or "compile_kernel" not in vars(Scheduler):
        return []
    return [Patch(Scheduler, "speedup_by_fusion",
                  wrapt.FunctionWrapper(decide, _speedup_by_fusion)),
            Patch(TritonKernel, "codegen_kernel_benchmark",
                  wrapt.FunctionWrapper(bench, _note_kernel_args))]
