"""Layer 4: one scope per Inductor compile, the one place where settings reach a compile.

Blocks, the env layer and ``iso.backend`` only choose settings (the context stack, the base
layer, a binding). Here, around Inductor's compile entry ``compile_fx`` (wrapped while the
patches are held; what dynamo's ``inductor`` backend and ``torch.compile(mode=, options=)``
call) and around ``iso.backend``'s compiles, in the compiling thread, for that compile:

1. the settings are resolved once into a :class:`Binding` (a stage's own settings win:
   ``iso.backend`` and ``iso.compile`` bind theirs; a plain stage binds None, which is plain
   torch even inside a block; else the block's, else the env layer's);
2. the patches (:data:`PATCHES`: the hooks' ``build_patches``, the subscriptions) are held;
   dynamo's compile lock is held from before any config goes in until it is out
   (``compat.compile_exclusion``): compiles run one at a time, each under its own config;
3. ``torch.compile``'s own ``mode``/``options`` (``config_patches``) go in first, as torch
   applies them, then the settings' config (:func:`config_changes`, read from the live
   config every time) and last the FX-graph-cache salt (hooks/cache.py), so a user's
   ``post_grad_custom_post_pass`` never replaces it; functorch's
   ``force_non_lazy_backward_lowering`` where this torch has it;
4. the binding is pinned on this thread's context stack (``state.push_pinned``): the gate
   and the hooks read exactly these settings;
5. ``compile_fx``'s ``inner_compile`` is bound to the binding: every forward/backward graph
   (a lazy backward, a recompile, in any thread) applies steps 2-4 again, with the options
   and the settings' config applied innermost, right around the graph's compile.

Calling a compiled function runs none of this: only compiles do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import wrapt

from .checks import manifest
from .core import events, state
from .core.budget import Budget
from .core.patching import Append, Patch, PatchSet
from .core.settings import Settings
from .fleet import decisions
from .hooks import cache, distributed, fusion, gate, generation, selector
from .torch_plan import compat
from .torch_plan.config_scope import PROCESS, ConfigChanges

HOOKS = (gate, selector, generation, fusion, cache, distributed)  # one module per site
# quiet: Inductor's AUTOTUNE tables, "Autotune Choices Stats" (only config stops them), and
# the warning torch 2.11-2.13's autotuner gives, off
QUIET_CONFIG = {"autotune_num_choices_displayed": 0, "max_autotune_report_choices_stats": False}
TYPED_STORAGE = "TypedStorage is deprecated"


@dataclasses.dataclass(frozen=True, eq=False)
class Binding:
    """What one compile, and every later graph of it, is compiled under."""

    settings: Settings | None  # None: plain torch
    budget: Budget | None = None
    bound: bool = False  # iso.backend / iso.compile: the settings belong to the function
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # mode/options


def _build() -> list[Any]:
    plan = compat.current_plan()
    patches: list[Any] = [p for hook in HOOKS for p in hook.build_patches(plan)]
    patches += decisions.build_patches(plan)
    patches.append(Append(events, "GRAPH_SCOPES", manifest.graph_scope))
    raw = vars(plan.entry_owner).get(compat.ENTRY_NAME) if plan.entry_owner else None
    if raw is not None:
        patches.append(Patch(plan.entry_owner, compat.ENTRY_NAME,
                             wrapt.FunctionWrapper(raw, _entry)))
    return patches


# Held while any settings can apply (blocks, the env layer, each bound compile).
PATCHES = PatchSet(_build, lambda: gate.clear_caches(compat.current_plan()))
# Held by blocks only: the lazy-compile-trap check on calls of compiled graphs.
CALL_CHECKS = PatchSet(cache.build_call_patches)


def config_changes(settings: Settings, config: Any) -> dict[str, Any]:
    """Inductor config of a compile under ``settings`` (without the salt): no unverifiable
    autotune paths, the search space, shared-memory pruning, no distributed autotuning
    under a fleet (each rank's compile must not wait on a collective of the others), no
    autotune tables when quiet."""
    changes: dict[str, Any] = {}
    if settings.quiet:
        changes.update({k: v for k, v in QUIET_CONFIG.items() if hasattr(config, k)})
    if settings.verify:
        for key in ("autotune_in_subproc", "pipeline_max_autotune_gemm",  # escape the check
                    "autotune_local_cache", "autotune_remote_cache"):  # unchecked winners
            if hasattr(config, key):
                changes[key] = False
    if hasattr(config, "max_autotune_prune_choices_based_on_shared_mem"):
        changes["max_autotune_prune_choices_based_on_shared_mem"] = True
    if settings.search_space is not None and hasattr(config, "max_autotune_gemm_search_space"):
        changes["max_autotune_gemm_search_space"] = settings.search_space
    if settings.fleet is not None and getattr(config, "distributed_max_autotune_gemm", False):
        changes["distributed_max_autotune_gemm"] = False
    return changes


@contextlib.contextmanager
def _inductor_config(binding: Binding) -> Iterator[None]:
    """The options, then the settings' config, then the salt (last), in this thread."""
    import torch._inductor.config as config

    with contextlib.ExitStack() as stack:
        if binding.config:
            stack.callback(compat.enter_config(ConfigChanges(config, binding.config)).exit)
        settings = state.current()
        if settings is not None:
            changes = config_changes(settings, config)
            if changes:
                stack.callback(compat.enter_config(ConfigChanges(config, changes)).exit)
            salt = cache.salted_post_pass(config.post_grad_custom_post_pass, settings)
            if salt is not None:
                stack.callback(compat.enter_config(ConfigChanges(
                    config, {"post_grad_custom_post_pass": salt})).exit)
        yield


@contextlib.contextmanager
def applied(binding: Binding) -> Iterator[None]:
    """Apply ``binding`` to the compile that runs inside, in this thread (steps 2-4)."""
    plan = compat.current_plan()
    if binding.settings is not None and not compat.check_plan(plan, binding.settings):
        binding = dataclasses.replace(binding, settings=None)  # unknown layout: plain torch
    with contextlib.ExitStack() as stack:
        if binding.settings is not None:
            PATCHES.acquire()
            stack.callback(PATCHES.release)
            gate.adopt_replacements(plan, PATCHES)
        stack.enter_context(compat.compile_exclusion(plan))
        stack.callback(state.pop, state.push_pinned(binding))
        if binding.settings is not None and binding.settings.quiet:
            stack.enter_context(warnings_hidden())
        backward = plan.backward_changes() if binding.settings is not None else None
        if backward is not None:
            stack.callback(compat.enter_config(backward).exit)
        stack.enter_context(_inductor_config(binding))
        yield


@contextlib.contextmanager
def warnings_hidden() -> Iterator[None]:
    """torch's TypedStorage warning off inside (process-wide), the filters restored after."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=TYPED_STORAGE, category=UserWarning)
        yield


def bind(inner_compile: Callable[..., Any], binding: Binding) -> Callable[..., Any]:
    """``inner_compile`` that compiles every graph under ``binding`` (step 5)."""

    @functools.wraps(inner_compile)
    def compile_graph(*args: Any, **kwargs: Any) -> Any:
        with contextlib.ExitStack() as stack:
            if state.current_compile() is not binding:  # later: lazy backward, other thread
                stack.enter_context(applied(binding))
            else:  # innermost, after anything torch applied around the inner compile
                stack.enter_context(_inductor_config(binding))
            stack.enter_context(events.graph_scope(binding.settings))
            return inner_compile(*args, **kwargs)

    compile_graph.inductor_sm_override_binding = binding  # type: ignore[attr-defined]
    return compile_graph


def compile_under(binding: Binding, entry: Callable[..., Any], args: tuple,
                  kwargs: dict[str, Any]) -> Any:
    """Run the compile entry ``entry(*args, **kwargs)`` (``compile_fx``'s signature) under
    ``binding``; its ``config_patches`` join the binding's options (applied first)."""
    plan = compat.current_plan()
    try:
        call = inspect.signature(inspect.unwrap(entry)).bind(*args, **kwargs).arguments
    except TypeError:
        call = {}
    patches = {**binding.config, **(call.pop("config_patches", None) or {})}
    if call and patches != dict(binding.config):
        binding = dataclasses.replace(binding, config=patches)
    if not call:  # not compile_fx's signature: apply around the call, as it is
        with applied(binding):
            return entry(*args, **kwargs)
    call["inner_compile"] = bind(call.get("inner_compile", plan.inner_compile), binding)
    with applied(binding):
        return entry(**call)


def compile_bound(model: Any, example_inputs: Any, binding: Binding,
                  region: str | None = None) -> Any:
    """``iso.backend``'s compile: Inductor's compile entry under ``binding`` (``region``:
    torch.compile's ``name=``, compile_fx's ``compile_region_name`` where it has one)."""
    plan = compat.current_plan()
    if plan.entry_owner is None:  # no compile entry we know: plain torch, mode/options kept
        from torch._inductor.compile_fx import compile_fx

        return compile_fx(model, example_inputs, config_patches=dict(binding.config))
    kwargs = {}
    if region and "compile_region_name" in plan.entry_params:
        kwargs["compile_region_name"] = region
    entry = getattr(plan.entry_owner, compat.ENTRY_NAME)  # our wrapper passes through
    return compile_under(binding, entry, (model, example_inputs), kwargs)


def _entry(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """Around ``compile_fx`` while the patches are held: a compile not yet bound gets the
    settings in force here (a block's, else the env layer's)."""
    if state.current_compile() is not None:  # inside a compile already (iso.backend, ...)
        return wrapped(*args, **kwargs)
    settings = state.current()
    if settings is None and compat.current_plan().config_scope != PROCESS:
        return wrapped(*args, **kwargs)  # plain compile, per-thread config: nothing to do
    return compile_under(Binding(settings, state.current_budget()), wrapped, args, kwargs)
