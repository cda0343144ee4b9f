"""Torch version detection and the per-version patch plan.

``VERSION_TABLE`` records, for every torch release we read, where the SM gate lives,
its signature and caching, which modules bind it by name, and which autotune hooks
exist, with the source file that was read. At activation the running torch is
checked *structurally* against the plan (the table is documentation and a test
oracle; the structure decides), so an untested release that looks the same works
with one warning, and a changed layout patches nothing.
"""

from __future__ import annotations

import contextvars
import dataclasses
import importlib
import inspect
import sys
import threading
import warnings
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from ..core.errors import UnsupportedTorchError
from . import config_scope
from .config_scope import ConfigChanges, Handle

GATE_MODULE = "torch._inductor.utils"
GATE_NAME = "is_big_gpu"
GATE_PARAMS = ("index_or_device", "index")  # accepted names of the gate's single parameter
HINTS_MODULE = "torch._inductor.runtime.hints"
SELECT_MODULE = "torch._inductor.select_algorithm"
CONFIG_MODULE = "torch._inductor.config"
ENTRY_MODULE = "torch._inductor.compile_fx"  # Inductor's compile entry: compile_fx(...)
ENTRY_NAME = "compile_fx"
FUNCTORCH_CONFIG = "torch._functorch.config"
DYNAMO_FRAMES = "torch._dynamo.convert_frame"  # holds dynamo's process-wide compile_lock
NON_LAZY_BACKWARD = "force_non_lazy_backward_lowering"


@dataclasses.dataclass(frozen=True)
class VersionEntry:
    """What one torch release looks like (from reading its source)."""

    source: str  # what was read: repository@tag path
    gate_signature: str
    gate_cache: str  # decorator holding the gate's answers
    sms_via: str  # how the gate reads the SM count
    binding_sites: tuple[str, ...]  # modules holding ``is_big_gpu`` as a global
    preprocessing_fn: bool  # select_algorithm.add_preprocessing_fn
    feedback_saver: bool  # select_algorithm.add_feedback_saver
    benchmark_choice: bool  # AlgorithmSelectorCache.benchmark_choice classmethod
    green_contexts: bool  # torch.cuda.green_contexts.GreenContext
    search_space_config: bool  # config.max_autotune_gemm_search_space
    caller: str  # the utils function that consults the gate
    config_scope: str = "process"  # torch ConfigModule values: "thread" (ContextVar) or not


_OLD_GATE = "is_big_gpu(index) -> bool"
_UNION_GATE = "is_big_gpu(index_or_device: Union[int, torch.device]=0) -> bool"
_PIPE_GATE = "is_big_gpu(index_or_device: int | torch.device=0) -> bool"
_TEST_HELPER = "torch.testing._internal.inductor_utils"  # binds it by name (test helper only)


def _entry(release: str, commit: str, line: int, **kw: Any) -> VersionEntry:
    minor = int(release.split(".")[1])
    return VersionEntry(
        source=f"pytorch/pytorch@v{release}.0 ({commit}) torch/_inductor/utils.py:{line}, "
        "select_algorithm.py, runtime/hints.py, config.py, cuda/green_contexts.py "
        "(read from the torch wheel of that release)",
        gate_signature=kw.get("sig", _UNION_GATE if minor < 12 else _PIPE_GATE),
        gate_cache="functools.lru_cache(None)" if minor < 8 else "functools.cache",
        sms_via=kw.get("sms_via", "DeviceProperties.create(device).multi_processor_count"),
        binding_sites=(GATE_MODULE,) + ((_TEST_HELPER,) if minor >= 5 else ()),
        preprocessing_fn=minor >= 9,
        feedback_saver=minor >= 5,
        benchmark_choice=minor >= 8,
        green_contexts=minor >= 10,
        search_space_config=True,
        caller="_use_template_for_cuda" if minor < 7 else "_use_template_for_gpu",
        config_scope=config_scope.THREAD if minor >= 13 else config_scope.PROCESS,
    )


_OLD = {
    "sig": _OLD_GATE,
    "sms_via": "torch.cuda.get_device_properties(index).multi_processor_count",
}

# Read from each release's source (see VersionEntry.source); the notes in docs/versions.md.
VERSION_TABLE: dict[str, VersionEntry] = {
    "2.4": _entry("2.4", "e4ee3be4063b", 973, **_OLD),
    "2.5": _entry("2.5", "32f585d9346e", 1044, **_OLD),
    "2.6": _entry("2.6", "2236df177080", 1117),
    "2.7": _entry("2.7", "134179474539", 1230),
    "2.8": _entry("2.8", "a1cb3cc05d46", 1416),
    "2.9": _entry("2.9", "0fabc3ba4482", 1538),
    "2.10": _entry("2.10", "449b17684101", 1659),
    "2.11": _entry("2.11", "70d99e998b49", 1711),
    "2.12": _entry("2.12", "7661cd9c6b84", 1697),
    "2.13": _entry("2.13", "cf30153c4c13", 1933),
    "2.14": _entry("2.14", "08187d9e0fba", 1785),
    "2.15": _entry("2.15", "d0f2af8b66b2", 2122),
}


def torch_release(version: str) -> str:
    """'2.13.0+cpu' -> '2.13'."""
    parts = version.split("+")[0].split(".")
    return ".".join(parts[:2])


@dataclasses.dataclass
class Plan:
    """What will be patched in the running torch, or why nothing can be."""

    torch_version: str
    entry: VersionEntry | None
    problems: list[str] = dataclasses.field(default_factory=list)
    gate_owner: ModuleType | None = None
    gate: Callable[..., bool] | None = None
    sites: list[ModuleType] = dataclasses.field(default_factory=list)
    device_properties: type | None = None  # class with a cached ``create`` classmethod
    max_sms_owner: ModuleType | None = None  # module with a cached get_max_num_sms()
    selector: ModuleType | None = None
    hooks: dict[str, bool] = dataclasses.field(default_factory=dict)
    config_scope: str = config_scope.PROCESS  # Inductor config: "thread" or "process"
    entry_owner: ModuleType | None = None  # module whose ``compile_fx`` is the compile entry
    inner_compile: Callable[..., Any] | None = None  # compile_fx's default inner_compile
    entry_params: frozenset[str] = frozenset()  # compile_fx's parameter names
    functorch_config: ModuleType | None = None
    compile_lock: Any = None  # dynamo's compile lock (an RLock), None where not found

    @property
    def supported(self) -> bool:
        return not self.problems

    @property
    def tested(self) -> bool:
        return self.entry is not None

    def missing_for(self, settings: Any) -> list[str]:
        """Features the settings ask for that this torch cannot deliver (fail closed)."""
        missing = []
        if settings.verify and not self.hooks.get("benchmark_choice"):
            missing.append("verification (needs AlgorithmSelectorCache.benchmark_choice, "
                           "torch >= 2.8; pass verify=False to accept unverified templates)")
        capped = settings.max_choices is not None or settings.budget_s is not None
        if capped and not self.hooks.get("preprocessing_fn"):
            missing.append("max_choices/budget_s (needs select_algorithm.add_preprocessing_fn, "
                           "torch >= 2.9)")
        if settings.simulate_sms is not None and not self.hooks.get("simulate_sms"):
            missing.append("simulate_sms (needs runtime.hints.DeviceProperties.create)")
        return missing

    def site_names(self) -> list[str]:
        return [f"{m.__name__}.{GATE_NAME}" for m in self.sites]

    def describe(self) -> dict[str, Any]:
        return {
            "torch_version": self.torch_version,
            "supported": self.supported,
            "tested": self.tested,
            "problems": list(self.problems),
            "sites": self.site_names(),
            "hooks": dict(self.hooks),
            "config_scope": self.config_scope,
        }

    def backward_changes(self) -> ConfigChanges | None:
        """functorch config that makes AOT autograd compile a graph's backward with its
        forward (``force_non_lazy_backward_lowering``: read in 2.11, 2.13 and 2.15; absent
        in 2.8 and 2.9, where the backward is compiled lazily, at the first ``.backward()``,
        through the bound inner compile). None where this torch lacks it."""
        if not self.hooks.get("non_lazy_backward") or self.functorch_config is None:
            return None
        return ConfigChanges(self.functorch_config, {NON_LAZY_BACKWARD: True})


def _gate_problem(gate: Any) -> str | None:
    """None when the gate looks like the one we know how to wrap."""
    if not callable(gate):
        return f"{GATE_MODULE}.{GATE_NAME} is not callable"
    target = inspect.unwrap(gate)
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return f"cannot read the signature of {GATE_NAME}"
    if len(params) != 1 or params[0].name not in GATE_PARAMS:
        text = ", ".join(p.name for p in params)
        return f"{GATE_NAME}({text}) has a signature this release of the package does not know"
    return None


def build_plan(
    version: str, modules: Mapping[str, ModuleType], *, extra_sites: list[ModuleType] = ()
) -> Plan:
    """Check a module layout structurally and say what would be patched.

    ``modules`` maps dotted names to loaded modules (``sys.modules`` in real use,
    fakes in tests). Pure: imports nothing.
    """
    entry = VERSION_TABLE.get(torch_release(version))
    plan = Plan(torch_version=version, entry=entry)
    owner = modules.get(GATE_MODULE)
    gate = getattr(owner, GATE_NAME, None) if owner is not None else None
    if gate is None:
        plan.problems.append(f"no {GATE_NAME} found in {GATE_MODULE}")
        return plan
    problem = _gate_problem(gate)
    if problem:
        plan.problems.append(problem)
        return plan
    plan.gate_owner, plan.gate = owner, gate
    candidates = [owner, *extra_sites]
    candidates += [m for n, m in modules.items()
                   if n.startswith("torch._inductor.") or n == _TEST_HELPER]
    seen: set[int] = set()
    for module in candidates:
        if module is None or id(module) in seen:
            continue
        seen.add(id(module))
        if vars(module).get(GATE_NAME) is gate:
            plan.sites.append(module)
    hints = modules.get(HINTS_MODULE)
    props = getattr(hints, "DeviceProperties", None)
    if props is not None and "create" in vars(props):
        plan.device_properties = props
    if callable(getattr(owner, "get_max_num_sms", None)):
        plan.max_sms_owner = owner
    selector = modules.get(SELECT_MODULE)
    plan.selector = selector
    selector_cache = getattr(selector, "AlgorithmSelectorCache", None)
    plan.hooks = {
        "preprocessing_fn": callable(getattr(selector, "add_preprocessing_fn", None)),
        "feedback_saver": callable(getattr(selector, "add_feedback_saver", None)),
        "benchmark_choice": "benchmark_choice" in vars(selector_cache or object),
        "simulate_sms": plan.device_properties is not None,
    }
    config = modules.get(CONFIG_MODULE)
    if config is not None:
        plan.config_scope = scope_of(config)
    functorch = modules.get(FUNCTORCH_CONFIG)
    plan.functorch_config = functorch
    plan.hooks["non_lazy_backward"] = functorch is not None and hasattr(functorch,
                                                                          NON_LAZY_BACKWARD)
    _find_entry(plan, modules.get(ENTRY_MODULE))
    # dynamo compiles every frame holding this RLock, and AOT autograd's backward compile
    # takes it too (2.11 compile_fx.py:2416, 2.13 :2573): compiles through torch.compile
    # already run one at a time, process-wide, in every release read
    plan.compile_lock = getattr(modules.get(DYNAMO_FRAMES), "compile_lock", None)
    return plan


def _find_entry(plan: Plan, owner: ModuleType | None) -> None:
    """The compile entry the settings are applied at: ``compile_fx(model_, example_inputs_,
    inner_compile=compile_fx_inner, config_patches=None, ...)`` (2.4-2.15). dynamo's
    ``inductor`` backend and ``torch.compile``'s ``_TorchCompileInductorWrapper`` import it
    from its module at every call (2.11 ``_dynamo/backends/inductor.py:29``,
    ``__init__.py:2459``; 2.13 ``:29``, ``:2486``), so the module attribute is the one to wrap.
    ``inner_compile`` compiles each forward/backward graph (AOT autograd's fw/bw/inference
    compilers call it, the lazy backward included), so binding it carries the settings to
    every later graph of that compile."""
    entry = getattr(owner, ENTRY_NAME, None) if owner is not None else None
    if entry is None:
        if owner is not None:
            plan.problems.append(f"no {ENTRY_NAME} in {ENTRY_MODULE}")
        plan.hooks["compile_entry"] = False
        return
    try:
        params = inspect.signature(inspect.unwrap(entry)).parameters
    except (TypeError, ValueError):
        params = {}
    inner = params.get("inner_compile")
    if inner is None or inner.default is inspect.Parameter.empty:
        plan.problems.append(f"{ENTRY_MODULE}.{ENTRY_NAME} has no inner_compile parameter "
                             "this release of the package knows")
        plan.hooks["compile_entry"] = False
        return
    plan.entry_owner, plan.inner_compile = owner, inner.default
    plan.entry_params = frozenset(params)
    plan.hooks["compile_entry"] = True


# --- config adapter: how a block's config changes are applied on this release (H3) --------


def scope_of(module: Any) -> str:
    """"thread" if the ConfigModule keeps its values in ContextVars (torch >= 2.13), else
    "process" (torch < 2.13, or a layout we do not know: refcounting is safe on both)."""
    entries = vars(module).get("_config") if hasattr(module, "__dict__") else None
    if isinstance(entries, dict) and entries:
        override = getattr(next(iter(entries.values())), "user_override", None)
        if isinstance(override, contextvars.ContextVar) and callable(
                getattr(module, "patch", None)):
            return config_scope.THREAD
    return config_scope.PROCESS


_OWN_COMPILE_LOCK = threading.RLock()


def compile_exclusion(plan: Plan) -> Any:
    """What a compile under override settings holds from before its config goes in until
    after it is restored: dynamo's compile lock (an RLock; torch holds it around every
    frame dynamo compiles and every backward compile, so taking it first keeps torch's lock
    order, and it is re-entrant there). Compiles then run one at a time, each under its own
    settings, on every release; where Inductor's config is process-global (< 2.13) plain
    compiles entering while the toolkit's patches are held take it too, so none sees
    another compile's config."""
    return plan.compile_lock if plan.compile_lock is not None else _OWN_COMPILE_LOCK


def enter_config(changes: ConfigChanges) -> Handle:
    """Apply a block's config changes in the way this release needs; ``Handle.exit`` undoes
    them. Thread layout: in this thread only. Process layout: refcounted
    process-wide (first block applies, last restores; see config_scope.py)."""
    if scope_of(changes.module) == config_scope.THREAD:
        return config_scope.enter_thread_local(changes.module, changes.changes)
    return config_scope.PROCESS_CONFIG.enter(changes.module, changes.changes)


def inductor_mode_config(mode: str | None, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``torch.compile``'s ``mode``/``options`` as Inductor config patches, validated as
    torch.compile validates them: ``torch._TorchCompileInductorWrapper(mode, options,
    dynamic)`` (2.4-2.15: ``list_mode_options(mode)`` then the options, ``-`` read as
    ``_``, an unknown key or a wrong type refused with torch's RuntimeError)."""
    import torch

    wrapper = getattr(torch, "_TorchCompileInductorWrapper", None)
    if wrapper is not None:
        return dict(wrapper(mode, dict(options) if options else None, None).config)
    from torch._inductor import list_mode_options

    found = dict(list_mode_options(mode)) if mode and mode != "default" else {}
    found.update({k.replace("-", "_"): v for k, v in (options or {}).items()})
    return found


def _import_sites(entry: VersionEntry | None) -> list[ModuleType]:
    """Import the modules that bind the gate by name, so they bind it *before* we patch."""
    found = []
    for name in entry.binding_sites if entry else ():
        if name == _TEST_HELPER:
            continue  # heavy test infrastructure: patched only when the user imported it
        try:
            found.append(importlib.import_module(name))
        except Exception:  # a listed module that fails to import is simply not a site
            continue
    return found


_plan: Plan | None = None
_plan_lock = threading.Lock()
_warned: set[str] = set()


def current_plan(refresh: bool = False) -> Plan:
    """The plan for the running torch (imports torch's Inductor on first use)."""
    global _plan
    with _plan_lock:
        if _plan is None or refresh:
            import torch

            for name in (GATE_MODULE, HINTS_MODULE, SELECT_MODULE, ENTRY_MODULE,
                         FUNCTORCH_CONFIG, DYNAMO_FRAMES):
                try:
                    importlib.import_module(name)
                except Exception:
                    continue
            entry = VERSION_TABLE.get(torch_release(torch.__version__))
            extra = _import_sites(entry)
            _plan = build_plan(torch.__version__, dict(sys.modules), extra_sites=extra)
        return _plan


def check_plan(plan: Plan, settings: Any) -> bool:
    """Decide whether to patch: True to go on; warn once or raise (strict) otherwise.

    Features the settings ask for but this torch lacks make the gate keep torch's own
    answer (see gate.py): a warning, or UnsupportedTorchError with strict.
    """
    strict = settings.strict
    if not plan.supported:
        what = "; ".join(plan.problems)
        message = (
            f"inductor_sm_override: torch {plan.torch_version} is not supported ({what}); "
            "nothing is patched and Inductor runs unchanged"
        )
        if strict:
            raise UnsupportedTorchError(message)
        _warn_once(message)
        return False
    missing = plan.missing_for(settings)
    if missing:
        message = (
            f"inductor_sm_override: torch {plan.torch_version} lacks "
            + "; ".join(missing)
            + ": the SM gate keeps torch's own answer while these are requested"
        )
        if strict:
            raise UnsupportedTorchError(message)
        _warn_once(message)
    if not plan.tested:
        _warn_once(
            f"inductor_sm_override: torch {plan.torch_version} is not in the tested version "
            "table; its layout matches, so the override is applied"
        )
    return True


def _warn_once(message: str) -> None:
    if message in _warned:
        return
    _warned.add(message)
    warnings.warn(message, RuntimeWarning, stacklevel=4)


# --- selector adapter (H2) ---
# What differs between releases in Inductor's autotuner, seen from the hooks (autotune.py):
# - ``AlgorithmSelectorCache.__call__`` returns ``(node, choice)`` from 2.13 on (choice None
#   for a deferred multi-template buffer) but only the node on 2.9-2.12 (2.11 ``:2920``,
#   2.9.1 ``:2432``), even for a sole choice or a deterministic pick;
# - ``AlgorithmSelectorCache._is_extern`` (2.10+) says which ``AutotuneArgs`` tensors a choice
#   is benchmarked with; it counts ``SubgraphChoiceCaller`` (decompose_k) as extern. On 2.9
#   the method does not exist (the same rule is written inline in ``benchmark_choice``).
# For the toolkit, only an ``ExternKernelCaller`` is a reference (never capped, never checked).


@dataclasses.dataclass(frozen=True)
class Selection:
    """What ``AlgorithmSelectorCache.__call__`` decided, on any release."""

    node: Any
    choice: Any  # the chosen ChoiceCaller, None when unknown or deferred
    deferred: bool  # a MultiTemplateBuffer: the choice is made later, in the scheduler


def _is_multi_template(node: Any) -> bool:
    try:
        from torch._inductor.ir import MultiTemplateBuffer
    except Exception:
        return False
    for _ in range(4):  # TensorBox -> StorageBox -> buffer
        if isinstance(node, MultiTemplateBuffer):
            return True
        node = getattr(node, "data", None)
        if node is None:
            return False
    return False


def unpack_selection(result: Any) -> Selection:
    """Read ``__call__``'s result: a ``(node, choice)`` tuple (2.13+) or a node (2.9-2.12)."""
    if isinstance(result, tuple) and len(result) == 2:
        node, choice = result
        return Selection(node, choice, choice is None and _is_multi_template(node))
    return Selection(result, None, _is_multi_template(result))


def infer_selected_choice(selector: Any, kept: list[Any]) -> Any:
    """The choice ``__call__`` took without benchmarking when it returned only a node:
    the sole choice, or the deterministic pick (None when it cannot be told)."""
    if len(kept) == 1:
        return kept[0]
    try:
        import torch._inductor.config as config

        if config.deterministic and len(kept) >= 2:
            return selector.pick_deterministic_choice(list(kept))
    except Exception:
        return None
    return None


def is_reference(choice: Any) -> bool:
    """An extern (ATen/cuBLAS/MKL) choice: the toolkit's reference and fallback."""
    from torch._inductor.select_algorithm import ExternKernelCaller

    return isinstance(choice, ExternKernelCaller)


def benchmarked_as_extern(choice: Any) -> bool:
    """Whether Inductor hands this choice the extern ``AutotuneArgs`` tensors."""
    from torch._inductor import select_algorithm as sa

    if "_is_extern" in vars(sa.AlgorithmSelectorCache):  # 2.10+
        return bool(sa.AlgorithmSelectorCache._is_extern(choice))
    # 2.9: the same rule written inline in benchmark_choice; 2.8: ExternKernelCaller only
    subgraph = getattr(sa, "SubgraphChoiceCaller", None)
    kinds = (sa.ExternKernelCaller,) + ((subgraph,) if isinstance(subgraph, type) else ())
    return isinstance(choice, kinds)


def selector_cache(selector: Any) -> Any:
    """Inductor's process-wide ``AlgorithmSelectorCache`` (where hook lists live).

    2.9+: ``get_algorithm_selector_cache()``. 2.5-2.8: the lazily created module global
    ``_ALGORITHM_SELECTOR_CACHE``, made here the way torch's own ``add_feedback_saver``
    makes it. None when neither exists.
    """
    get = getattr(selector, "get_algorithm_selector_cache", None)
    if callable(get):
        return get()
    cls = getattr(selector, "AlgorithmSelectorCache", None)
    if cls is None or not hasattr(selector, "_ALGORITHM_SELECTOR_CACHE"):
        return None
    if selector._ALGORITHM_SELECTOR_CACHE is None:
        selector._ALGORITHM_SELECTOR_CACHE = cls()
    return selector._ALGORITHM_SELECTOR_CACHE


def has_preprocessing_hook(cache: Any) -> bool:
    """Whether Inductor runs preprocessing fns on an op's choices (2.9+); before that the
    toolkit runs its own from the ``__call__`` wrapper."""
    return isinstance(getattr(cache, "preprocessing_fns", None), list)



def subgraph_output(choice: Any, inputs: list[Any]) -> Any:
    """What a ``SubgraphChoiceCaller`` (decompose_k) really computes for ``inputs``.

    Its ``benchmark(*inputs, out=...)`` never writes ``out`` (2.11 and 2.13
    ``codegen/subgraph.py``: it times ``self._compiled_module.call([*sym_input_values,
    *inputs])``), so the output to check is what that compiled module returns. The module
    is compiled at the first benchmark (2.13 ``_ensure_compiled``; 2.11 inline through
    ``_compile_for_benchmarking``). Raises when this torch's class has neither.
    """
    module = getattr(choice, "_compiled_module", None)
    if module is None:
        ensure = getattr(choice, "_ensure_compiled", None)  # 2.13
        if callable(ensure):
            ensure()
            module = choice._compiled_module
        else:  # 2.11
            module = choice._compile_for_benchmarking()
            choice._compiled_module = module
    outputs = module.call([*getattr(choice, "sym_input_values", ()), *inputs])
    return outputs[0] if isinstance(outputs, (list, tuple)) else outputs
