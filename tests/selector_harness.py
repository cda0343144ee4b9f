"""Inductor's real autotuner on the CPU with hand-made choices.

``select(...)`` calls the real ``AlgorithmSelectorCache.__call__`` inside a graph handler:
preprocessing fns, ``do_autotuning``, ``get_inputs`` (``AutotuneArgs``),
``benchmark_choice``, feedback savers, and, with ``deferred=True``, a real
``MultiTemplateBuffer`` whose ``choice_timings()`` runs the scheduler-time autotuning
(``cpu_backend="triton"`` lets the CPU take that path). The choices are an ATen extern
(``aten_mm.bind``) and ``Template`` objects: ``ChoiceCaller`` subclasses with Triton-like
descriptions whose "kernel" is ``torch.mm`` written into ``out`` like a Triton kernel
(at ``layout.offset`` of the base buffer), optionally wrong.
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
    from torch._inductor.select_algorithm import SubgraphChoiceCaller
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

    def run(self, *args: torch.Tensor) -> torch.Tensor:
        value = args[0] @ args[1]
        return value + 1.0 if self.wrong else value

    def benchmark(self, *args: torch.Tensor, out: torch.Tensor) -> float:
        self.benchmarked += 1
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


def subgraph_choice(name: str, input_nodes: list, layout: Any, *, wrong: bool = False) -> Any:
    """A real ``SubgraphChoiceCaller`` (decompose_k's class) computing ``a @ b``."""

    class Decompose(SubgraphChoiceCaller):
        def __init__(self) -> None:
            ir.ChoiceCaller.__init__(self, name, input_nodes, layout, description="decompose_k")
            self.wrong = wrong

        def benchmark(self, *args: torch.Tensor, out: torch.Tensor) -> float:
            out.copy_(args[0] @ args[1] + (1.0 if self.wrong else 0.0))  # extern tensors
            return 0.01

        def hash_key(self) -> str:
            return name

        def kernel_hash_key(self) -> str:
            return name

        def output_node(self) -> Any:
            return ir.TensorBox.create(ir.InputBuffer(name=f"out_{name}", layout=layout))

        def precompile(self) -> None:
            return None

    return Decompose()


@contextlib.contextmanager
def lowering(size: int = 16, offset: int = 0, dtype: Any = torch.float32):
    """A graph handler and mm inputs/layout: yields (a, b, layout)."""
    gm = torch.fx.symbolic_trace(lambda x: x + 1)
    graph = GraphLowering(gm)
    cpu = torch.device("cpu")
    with V.set_graph_handler(graph), config.patch(max_autotune=True, cpu_backend="triton"):
        a = ir.InputBuffer(name="a", layout=ir.FixedLayout(cpu, dtype, [size, size]))
        b = ir.InputBuffer(name="b", layout=ir.FixedLayout(cpu, dtype, [size, size]))
        layout = ir.FixedLayout(cpu, dtype, [size, size], offset=offset)
        yield a, b, layout


def extern(a: Any, b: Any, layout: Any) -> Any:
    return aten_mm.bind((a, b), layout)


def select(name: str, choices: list, a: Any, b: Any, layout: Any, *,
           deferred: bool = False) -> Any:
    """Run the real selector; with ``deferred`` also run the scheduler-time autotuning."""
    from torch._inductor import select_algorithm

    from inductor_sm_override.compat import selector_cache

    selector = selector_cache(select_algorithm)  # Inductor's singleton, as in real use
    result = selector(name, choices, [a, b], layout, return_multi_template=deferred)
    node = result[0] if isinstance(result, tuple) else result
    return node


def run_deferred(node: Any) -> dict:
    """What the scheduler does with a multi-template buffer: its timings."""
    return node.data.data.choice_timings()


@contextlib.contextmanager
def quiet_logging(monkeypatch: Any):
    """Inductor's autotune result logging needs a debug context this harness lacks."""
    monkeypatch.setattr(AlgorithmSelectorCache, "log_results",
                        staticmethod(lambda *args, **kwargs: None))
    yield
