"""Inductor's real autotuner on the CPU with hand-made choices.

``select(...)`` calls the real ``AlgorithmSelectorCache.__call__`` inside a graph handler:
preprocessing fns, ``do_autotuning``, ``get_inputs`` (``AutotuneArgs``),
``benchmark_choice``, feedback savers, and, with ``deferred=True``, a real
``MultiTemplateBuffer`` whose ``choice_timings()`` runs the scheduler-time autotuning
(``cpu_backend="triton"`` lets the CPU take that path). The choices are an ATen extern
(``aten_mm.bind``) and ``Template`` objects: ``ChoiceCaller`` subclasses with Triton-like
descriptions whose "kernel" is ``torch.mm`` written into ``out`` like a Triton kernel
(at ``layout.offset`` of the base buffer), optionally wrong, and torch's own
``SubgraphChoiceCaller`` (decompose_k's class), which never writes ``out``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch._inductor import config, ir
from torch._inductor.graph import GraphLowering
from torch._inductor.kernel.mm import aten_mm
from torch._inductor.select_algorithm import AlgorithmSelectorCache
from torch._inductor.virtualized import V

try:
    from torch._inductor.codegen.subgraph import SubgraphChoiceCaller
except ImportError:  # pragma: no cover - older torch
    SubgraphChoiceCaller = None


def _triton_like_write(out: torch.Tensor, layout: Any, value: torch.Tensor) -> None:
    """Write like a Triton template: ``out`` is the base view, the kernel adds the offset."""
    offset = int(layout.offset)
    target = torch.as_strided(out, out.size(), out.stride(), out.storage_offset() + offset)
    target.copy_(value)


class Template(ir.ChoiceCaller):
    """A template-like choice (not an ExternKernelCaller)."""

    def __init__(self, name: str, input_nodes: list, layout: Any, *, bm: int = 32,
                 bn: int = 32, bk: int = 16, stages: int = 2, warps: int = 4,
                 wrong: bool = False, ms: float = 0.5, writes: bool = True) -> None:
        super().__init__(name, input_nodes, layout,
                         description=f"ACC_TYPE='tl.float32', BLOCK_K={bk}, BLOCK_M={bm}, "
                         f"BLOCK_N={bn}, num_stages={stages}, num_warps={warps}")
        self.wrong, self.ms, self.writes = wrong, ms, writes
        self.benchmarked = 0
        self.window_at_start: torch.Tensor | None = None  # what the checked window held

    def _window(self, out: torch.Tensor) -> torch.Tensor:
        offset = int(self.layout.offset)
        return torch.as_strided(out, out.size(), out.stride(), out.storage_offset() + offset)

    def run(self, *args: torch.Tensor) -> torch.Tensor:
        value = args[0] @ args[1]
        return value + 1.0 if self.wrong else value

    def benchmark(self, *args: torch.Tensor, out: torch.Tensor) -> float:
        self.benchmarked += 1
        self.window_at_start = self._window(out).clone()
        if self.writes:
            _triton_like_write(out, self.layout, self.run(*args))
        return self.ms

    def hash_key(self) -> str:
        return self.name

    def kernel_hash_key(self) -> str:
        return self.name

    def output_node(self) -> Any:
        return ir.TensorBox.create(ir.InputBuffer(name=f"out_{self.name}", layout=self.layout))

    def to_callable(self) -> Any:
        return self.run

    def call_name(self) -> str:
        return self.name

    def info_dict(self) -> dict:
        return {}


def split_k_mm(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """decompose_k's computation (kernel/mm.py ``decomposeK``) without ``out_dtype``, which
    the CPU's bmm lacks: a bmm over 4 K-slices, summed."""
    m, k = x.shape
    parts = x.reshape(m, 4, k // 4).permute(1, 0, 2)
    return torch.bmm(parts, y.reshape(4, k // 4, y.shape[1])).sum(0)


def transposed_mm(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A wrong subgraph: ``x @ y.T`` (square inputs). Not ``y @ x``: torch draws each
    benchmark input under ``preserve_rng_state()`` (``generate_example_value``), so two
    inputs of one shape hold the same values and ``y @ x`` would equal ``x @ y``."""
    return torch.mm(x, y.t())


def subgraph_choice(name: str, input_nodes: list, layout: Any, fn: Any = split_k_mm) -> Any:
    """Torch's own ``SubgraphChoiceCaller`` (decompose_k's class), made the way decompose_k
    makes it (``SubgraphTemplate.generate`` of a ``make_fx`` graph), computing ``fn``. Its
    ``benchmark`` compiles the subgraph and times it without writing ``out``, as in torch.
    ``input_nodes`` must be TensorBoxes (see :func:`boxed`); use ``lowering(cpp=True)``."""
    from torch._dispatch.python import enable_python_dispatcher
    from torch._inductor.codegen.subgraph import SubgraphTemplate
    from torch._inductor.decomposition import select_decomp_table
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx

    with V.set_fake_mode(FakeTensorMode()), enable_python_dispatcher():
        graph = make_fx(fn, select_decomp_table())  # as DecomposeKSugraphTemplate.generate
        choice = SubgraphTemplate(name).generate(
            name=name, input_nodes=input_nodes, layout=layout, make_fx_graph=graph,
            description="decompose_k-like subgraph")
    choice.name = name  # generate() appends a counter
    return choice


def boxed(*nodes: Any) -> list:
    """Input buffers as lowering passes them to GEMM choices (TensorBox(StorageBox(...)))."""
    return [ir.TensorBox.create(node) for node in nodes]


@contextlib.contextmanager
def lowering(size: int = 16, offset: int = 0, dtype: Any = torch.float32, cpp: bool = False,
             pad: int = 0):
    """A graph handler and mm inputs/layout: yields (a, b, layout). ``cpp``: keep the C++
    CPU backend (subgraph choices compile their graph with it) instead of the Triton one
    that lets the CPU take the deferred (multi-template) path; ``pad``: the inputs' rows
    padded by that many elements (stride ``size + pad``)."""
    from torch._inductor.debug import DebugContext

    gm = torch.fx.symbolic_trace(lambda x: x + 1)
    graph = GraphLowering(gm)
    cpu = torch.device("cpu")
    backend = "cpp" if cpp else "triton"
    with V.set_graph_handler(graph), V.set_debug_handler(DebugContext()), \
            config.patch(max_autotune=True, cpu_backend=backend):
        stride = [size + pad, 1]
        a = ir.InputBuffer(name="a", layout=ir.FixedLayout(cpu, dtype, [size, size], stride))
        b = ir.InputBuffer(name="b", layout=ir.FixedLayout(cpu, dtype, [size, size], stride))
        layout = ir.FixedLayout(cpu, dtype, [size, size], offset=offset)
        yield a, b, layout


def extern(a: Any, b: Any, layout: Any) -> Any:
    return aten_mm.bind((a, b), layout)


@contextlib.contextmanager
def compiling() -> Any:
    """What Inductor's compile entry opens around lowering and scheduling in real use: the
    settings in force here applied to "this compile" (compile_scope.py: config such as the
    autotune caches off, the search space), nothing when no settings hold."""
    from inductor_sm_override import compile_scope
    from inductor_sm_override.core import state

    settings = state.current()
    if settings is None:
        yield
        return
    with compile_scope.applied(compile_scope.Binding(settings, state.current_budget())):
        yield


def select(name: str, choices: list, a: Any, b: Any, layout: Any, *,
           deferred: bool = False, in_compile: dict | None = None) -> Any:
    """Run the real selector (inside the compile the settings in force would apply to).

    ``in_compile``: Inductor config that code running inside the compile sets after the
    settings were applied (a custom pass, a torch path), which the settings cannot undo."""
    from torch._inductor import config, select_algorithm

    from inductor_sm_override.torch_plan.compat import selector_cache

    selector = selector_cache(select_algorithm)  # Inductor's singleton, as in real use
    with compiling(), config.patch(**(in_compile or {})):
        result = selector(name, choices, [a, b], layout, return_multi_template=deferred)
    node = result[0] if isinstance(result, tuple) else result
    return node


def run_deferred(node: Any) -> dict:
    """What the scheduler does with a multi-template buffer: its timings."""
    with compiling():
        return node.data.data.choice_timings()


@contextlib.contextmanager
def quiet_logging(monkeypatch: Any):
    """Inductor's autotune result logging needs a debug context this harness lacks."""
    monkeypatch.setattr(AlgorithmSelectorCache, "log_results",
                        staticmethod(lambda *args, **kwargs: None))
    yield


# --- one GEMM of any shape (the fault matrix, padded strides) ------------------------------

class GemmTemplate(Template):
    """A template-like choice computing ``op`` from the selector's inputs: mm / bmm
    ``a @ b``, addmm ``bias + a @ b`` (bias first, as Inductor passes it)."""

    def run(self, *args: torch.Tensor) -> torch.Tensor:
        value = args[-2] @ args[-1]
        if len(args) == 3:
            value = value + args[0]
        return value + 1.0 if self.wrong else value


def _rows(size: list[int], pad: int) -> list[int]:
    """Row-major strides of ``size`` with ``pad`` extra elements after every row."""
    strides, step = [], 1
    for index, dim in enumerate(reversed(size)):
        strides.append(step)
        step *= dim + (pad if index == 0 else 0)
    return list(reversed(strides))


@contextlib.contextmanager
def gemm(op: str = "mm", m: int = 16, k: int = 16, n: int = 16, batch: int = 4, pad: int = 0,
         dtype: Any = torch.float32):
    """A graph handler and one GEMM's selector inputs: yields (inputs, layout, extern choice).
    ``op``: mm, bmm or addmm (bias first, expanded with stride 0 as Inductor's lowering
    passes it); ``pad``: extra elements after every row of each operand (padded strides)."""
    from torch._inductor.kernel.bmm import aten_bmm
    from torch._inductor.kernel.mm import aten_addmm

    cpu = torch.device("cpu")
    lead = [batch] if op == "bmm" else []

    def buffer(name: str, size: list[int], stride: list[int] | None = None) -> Any:
        size = [*lead, *size]
        return ir.InputBuffer(name=name, layout=ir.FixedLayout(
            cpu, dtype, size, stride or _rows(size, pad)))

    with lowering() as _unused:
        a, b = buffer("a", [m, k]), buffer("b", [k, n])
        layout = ir.FixedLayout(cpu, dtype, [*lead, m, n])
        if op == "addmm":
            bias = buffer("bias", [m, n], [0, 1])
            inputs = [bias, a, b]
            reference = aten_addmm.bind(tuple(inputs), layout)
        else:
            inputs = [a, b]
            reference = (aten_bmm if op == "bmm" else aten_mm).bind((a, b), layout)
        yield inputs, layout, reference


def select_inputs(name: str, choices: list, inputs: list, layout: Any, **kwargs: Any) -> Any:
    """:func:`select` for any number of inputs (``input_gen_fns`` etc. in ``kwargs``)."""
    from torch._inductor import select_algorithm

    from inductor_sm_override.torch_plan.compat import selector_cache

    with compiling():
        result = selector_cache(select_algorithm)(name, choices, inputs, layout, **kwargs)
    return result[0] if isinstance(result, tuple) else result
