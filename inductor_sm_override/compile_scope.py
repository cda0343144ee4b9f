"""Where override settings are applied to a compile: the one place.

Blocks, the environment layer and ``iso.backend`` only decide *which* settings hold (a
block through the context stack, the env layer process-wide, a backend by binding them).
This module applies them, around Inductor's compile entry
``torch._inductor.compile_fx.compile_fx`` (what dynamo's ``inductor`` backend and
``torch.compile(mode=...)`` call; wrapped while the toolkit's patches are held) and around
``iso.backend``'s compiles, in the thread that compiles, for exactly that compile:

1. the toolkit's patches are held (refcounted; a gate that another library replaced
   meanwhile is adopted, gate.py);
2. the compile holds dynamo's compile lock from before its config is applied until after
   it is restored (``compat.compile_exclusion``): torch already holds it around every frame
   dynamo compiles and every backward compile (compiles through ``torch.compile`` run one
   at a time), and this extends it to ``compile_fx`` called directly. Where Inductor's
   config is process-global (torch < 2.13), a compile without override settings that
   enters while the patches are held takes it too, so no compile sees another's config;
3. the settings are pushed on this thread's context stack (``state.push_pinned``), so the
   gate, the SM simulation and the autotune hooks read them;
4. the config a compile needs is applied through compat's config adapter (per thread from
   2.13, refcounted process-wide before): ``iso.backend``'s mode/options, then the settings'
   own (autotune.block_changes: search space, autotune caches off under verify, the
   FX-graph-cache salt) and functorch's ``force_non_lazy_backward_lowering`` where it exists;
5. ``compile_fx``'s ``inner_compile`` is replaced by one bound to the same settings. AOT
   autograd compiles every forward and backward graph through it (its fw, bw and inference
   compilers), including a backward compiled lazily at the first ``.backward()``, after any
   block has ended, in whatever thread runs it (torch 2.11/CUDA: autograd's device thread):
   there the bound inner compile applies the same settings again (steps 1-4).

Calling a compiled function runs none of this: only compiles do.

Extension point: :data:`GRAPH_HOOKS`, callables ``hook(settings) -> context manager``,
entered (in list order) around each graph compiled or loaded under override settings: one
forward or backward graph through the inner compile (Inductor's FX-graph-cache lookup
included), or one graph loaded by AOT autograd's cache (which bypasses the inner compile),
in the compiling thread, with that compile's settings. A hook that raises fails the
compile; a hook that only observes must catch its own errors.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import wrapt

from . import compat, config_scope, state
from .budget import Budget
from .config_scope import ConfigChanges
from .patching import Patch
from .settings import Settings

GRAPH_HOOKS: list[Callable[[Settings], contextlib.AbstractContextManager]] = []


@dataclasses.dataclass(frozen=True, eq=False)
class Binding:
    """What one compile, and every later graph of it, is compiled under."""

    settings: Settings | None  # None: a plain compile (held back only where config is
    # process-global, so that it never sees another compile's config)
    budget: Budget | None = None
    bound: bool = False  # iso.backend: the settings belong to the compiled function
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # mode/options


_BINDING: contextvars.ContextVar[Binding | None] = contextvars.ContextVar(
    "inductor_sm_override_compile", default=None)
_IN_GRAPH: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "inductor_sm_override_graph", default=False)


def current() -> Binding | None:
    """The binding of the compile running in this thread/context, or None."""
    return _BINDING.get()


def _settings_changes(plan: compat.Plan, settings: Settings) -> list[ConfigChanges]:
    import torch._inductor.config as inductor_config

    from .autotune import block_changes

    found = []
    changes = block_changes(settings)  # reads the user's post-grad pass: after mode/options
    if changes:
        found.append(ConfigChanges(inductor_config, changes))
    backward = plan.backward_changes()
    if backward is not None:
        found.append(backward)
    return found


@contextlib.contextmanager
def applied(binding: Binding) -> Iterator[None]:
    """Apply ``binding`` to the compile that runs inside, in this thread (steps 1-4)."""
    from .block import PATCHES
    from .gate import adopt_replacements

    plan = compat.current_plan()
    settings = binding.settings
    if settings is not None and not compat.check_plan(plan, settings):
        settings = None  # unknown torch layout: compile as plain torch (mode/options kept)
    with contextlib.ExitStack() as stack:
        if settings is not None:
            PATCHES.acquire()
            stack.callback(PATCHES.release)
            adopt_replacements(plan, PATCHES)
        stack.enter_context(compat.compile_exclusion(plan))
        if binding.config:
            import torch._inductor.config as inductor_config

            stack.callback(compat.enter_config(ConfigChanges(inductor_config,
                                                             binding.config)).exit)
        if settings is not None:
            entry = state.push_pinned(settings, binding.budget)
            stack.callback(state.pop, entry)
            for changes in _settings_changes(plan, settings):
                stack.callback(compat.enter_config(changes).exit)
        token = _BINDING.set(binding)
        stack.callback(_BINDING.reset, token)
        yield


@contextlib.contextmanager
def graph_scope(settings: Settings | None) -> Iterator[None]:
    """Enter :data:`GRAPH_HOOKS` around one graph (not again inside one)."""
    if settings is None or not GRAPH_HOOKS or _IN_GRAPH.get():
        yield
        return
    token = _IN_GRAPH.set(True)
    try:
        with contextlib.ExitStack() as stack:
            for hook in list(GRAPH_HOOKS):
                stack.enter_context(hook(settings))
            yield
    finally:
        _IN_GRAPH.reset(token)


def bind(inner_compile: Callable[..., Any], binding: Binding) -> Callable[..., Any]:
    """``inner_compile`` that compiles every graph under ``binding`` (step 5)."""

    @functools.wraps(inner_compile)
    def compile_graph(*args: Any, **kwargs: Any) -> Any:
        if _BINDING.get() is binding:  # inside the compile it belongs to
            with graph_scope(binding.settings):
                return inner_compile(*args, **kwargs)
        with applied(binding), graph_scope(binding.settings):  # later: lazy backward, ...
            return inner_compile(*args, **kwargs)

    compile_graph.inductor_sm_override_binding = binding  # type: ignore[attr-defined]
    return compile_graph


def _with_bound_inner(plan: compat.Plan, binding: Binding, args: tuple,
                      kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
    """compile_fx(model_, example_inputs_, inner_compile=compile_fx_inner, ...)."""
    if len(args) > 2:
        return (*args[:2], bind(args[2], binding), *args[3:]), kwargs
    inner = kwargs.get("inner_compile", plan.inner_compile)
    return args, {**kwargs, "inner_compile": bind(inner, binding)}


def compile_under(binding: Binding, entry: Callable[..., Any], args: tuple,
                  kwargs: dict[str, Any]) -> Any:
    """Run the compile entry ``entry(*args, **kwargs)`` under ``binding``."""
    plan = compat.current_plan()
    args, kwargs = _with_bound_inner(plan, binding, args, kwargs)
    with applied(binding):
        return entry(*args, **kwargs)


def compile_bound(model: Any, example_inputs: Any, binding: Binding,
                  region: str | None = None) -> Any:
    """``iso.backend``'s compile: Inductor's compile entry under ``binding`` (``region``:
    torch.compile's ``name=``, compile_fx's ``compile_region_name`` where it has one)."""
    plan = compat.current_plan()
    if plan.entry_owner is None:  # no compile entry we know: plain torch, mode/options kept
        from torch._inductor.compile_fx import compile_fx

        return compile_fx(model, example_inputs, config_patches=dict(binding.config))
    entry = getattr(plan.entry_owner, compat.ENTRY_NAME)  # our wrapper passes through here
    kwargs = {}
    if region and "compile_region_name" in plan.entry_params:
        kwargs["compile_region_name"] = region
    return compile_under(binding, entry, (model, example_inputs), kwargs)


def _entry(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """Around ``compile_fx`` while the patches are held: the settings in force here (a
    block's, else the env layer's) apply to this compile and every later graph of it."""
    if _BINDING.get() is not None:  # compile_fx calls itself (config_patches), iso.backend
        return wrapped(*args, **kwargs)
    settings = state.current()
    if settings is None and compat.current_plan().config_scope != config_scope.PROCESS:
        return wrapped(*args, **kwargs)  # plain compile, per-thread config: nothing to do
    return compile_under(Binding(settings, state.current_budget()), wrapped, args, kwargs)


def build_patches(plan: compat.Plan) -> list[Patch]:
    """The compile-entry wrapper (installed with the other patches)."""
    if plan.entry_owner is None:
        return []
    raw = vars(plan.entry_owner).get(compat.ENTRY_NAME)
    if raw is None:
        return []
    return [Patch(plan.entry_owner, compat.ENTRY_NAME, wrapt.FunctionWrapper(raw, _entry))]
