"""The scheduler's fusion decision on the CPU, for fusion.py.

Real torch objects where the CPU allows: the ``MultiTemplateBuffer`` comes from Inductor's
real autotuner (selector_harness ``select(deferred=True)``), the template choices are real
``TritonTemplateCaller`` subclasses (what ``swap_as_triton_caller`` and
``finalize_as_triton_caller`` accept), the extern is ``aten_mm``, ``FusionResult`` is
torch's, and kernel arguments are recorded in torch's real ``KernelArgs``. What needs a GPU
is faked faithfully: ``Scheduler`` (its ``speedup_by_fusion`` follows torch 2.11's
multi-template path with ``benchmark_epilogue_fusion``: compile the fastest Triton choice
with the epilogue under ``swap_as_triton_caller``, time it, and in the returned decision
``finalize_as_triton_caller`` it and replace ``_choice_timings[None]`` with the fused
timings), scheduler nodes, and ``compile_kernel``'s modules (``get_args()`` / ``call(args)``
as Inductor's benchmark harness writes them, computed with torch on the CPU).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch._inductor import ir
from torch._inductor.codegen.common import KernelArgs
from torch._inductor.scheduler import FusionResult
from torch._inductor.select_algorithm import TritonTemplateCaller
from torch._inductor.virtualized import V

from inductor_sm_override.hooks import fusion

EPILOGUE_MS, FUSED_MS = 0.3, 0.1


class FusableTemplate(TritonTemplateCaller):
    """A Triton template choice whose unfused kernel computes ``a @ b`` (right, so it passes
    the unfused check) and whose fused kernel (template + epilogue) may be wrong."""

    def __init__(self, name: str, input_nodes: list, layout: Any, *, ms: float = 0.5,
                 fused_wrong: bool = False, fused_flip: bool = False,
                 mask_wrong: bool = False) -> None:
        ir.ChoiceCaller.__init__(self, name, input_nodes, layout,
                                 description="BLOCK_M=32, BLOCK_N=32, BLOCK_K=16, "
                                 "num_stages=2, num_warps=4")
        self.make_kernel_render = object()  # what the buffer holds once this is chosen
        self.ms, self.fused_wrong = ms, fused_wrong
        # fused kernel with a relu mask: ``fused_flip`` computes the GEMM a hair off (within
        # tolerance), so the mask flips where the value is nearest 0; ``mask_wrong``
        # thresholds at 0.5 instead of 0
        self.fused_flip, self.mask_wrong = fused_flip, mask_wrong
        self.hint_override = None
        self.allowed_prologue_inps = set()

    def benchmark(self, *args: torch.Tensor, out: torch.Tensor) -> float:
        offset = int(self.layout.offset)
        torch.as_strided(out, out.size(), out.stride(), out.storage_offset() + offset).copy_(
            args[0] @ args[1])
        return self.ms

    def precompile(self) -> None:
        return None

    def __str__(self) -> str:
        return self.name

    def hash_key(self) -> str:
        return self.name

    def kernel_hash_key(self) -> str:
        return self.name

    def info_dict(self) -> dict:
        return {}

    def output_node(self) -> Any:
        return ir.TensorBox.create(ir.InputBuffer(name=f"out_{self.name}", layout=self.layout))


class SNode:
    """A scheduler node (the part ``speedup_by_fusion`` and the check use)."""

    def __init__(self, name: str, *, template: Any = None) -> None:
        self.name, self.template = name, template

    def get_name(self) -> str:
        return self.name

    def get_nodes(self) -> list[SNode]:
        return [self]

    def is_template(self) -> bool:
        return self.template is not None

    def get_template_node(self) -> Any:
        return self.template


class Module:
    """What ``PyCodeCache.load`` returns for a benchmark kernel: ``get_args`` / ``call``."""

    def __init__(self, specs: list[tuple[str, list[int]]], fn: Any) -> None:
        self.specs, self.fn = specs, fn

    def get_args(self) -> list[torch.Tensor]:
        """Random arguments as ``rand_strided`` makes them (strides kept; integers zero)."""
        out = []
        for _name, size, *rest in self.specs:
            stride = rest[0] if rest else None
            dtype = rest[1] if len(rest) > 1 else torch.float32
            t = torch.empty_strided(size, stride or torch.empty(size).stride(), dtype=dtype)
            out.append(t.normal_() if dtype.is_floating_point else t.zero_())
        return out

    def call(self, args: list[torch.Tensor]) -> None:
        self.fn(*args)
        args.clear()  # as Inductor's generated call() does


class FakeKernel:
    """A generated Triton kernel as far as fusion.py reads it: ``.args`` (torch's own)."""

    def __init__(self, inputs: list[str], outputs: list[str]) -> None:
        self.args = KernelArgs()
        for name in inputs:
            self.args.input(name)
        for name in outputs:
            self.args.output(name)


class FakeScheduler:
    """``Scheduler``: ``speedup_by_fusion`` (torch 2.11's multi-template path, abridged),
    ``compile_kernel`` and ``_any_atomic_add``."""

    def __init__(self, a: str, b: str, bias: str, out: str, size: int,
                 atomic: bool = False, pad: int = 0, mask: str | None = None) -> None:
        self.a, self.b, self.bias, self.out, self.size = a, b, bias, out, size
        self.atomic, self.pad, self.mask = atomic, pad, mask  # mask: relu + mask epilogue
        self.compiled: list[list[str]] = []

    def _any_atomic_add(self, nodes: list[Any]) -> bool:
        return self.atomic

    def speedup_by_fusion(self, node1: Any, node2: Any) -> FusionResult:
        multi = node1.get_template_node()
        fused_nodes = [*node1.get_nodes(), *node2.get_nodes()]
        _min_choice, ms1 = multi.get_min_choice()
        ranked = sorted(multi.choice_timings().items(), key=lambda item: item[1])
        best = next(c for c, _ in ranked if isinstance(c, TritonTemplateCaller))
        with multi.swap_as_triton_caller(best):
            future, module = self.compile_kernel(fused_nodes)

        def benchmark_when_ready() -> bool:
            with multi.swap_as_triton_caller(best):
                module.get_args()  # benchmark_codegened_module's run, timed
                ms_fused = FUSED_MS
            if ms_fused < ms1 + EPILOGUE_MS:
                multi.finalize_as_triton_caller(best)
                multi._choice_timings[None] = {best: ms_fused}
                return True
            return False

        return FusionResult.from_callable(benchmark_when_ready, future)

    def compile_kernel(self, nodes: list[Any], hint_override: Any = None) -> tuple[Any, Any]:
        """A benchmark module for ``nodes``; its arguments are recorded the way
        ``TritonKernel.codegen_kernel_benchmark`` is seen by fusion.py."""
        self.compiled.append([n.get_name() for n in nodes])
        n, template = self.size, next((x.template for x in nodes if x.is_template()), None)
        square = [n, n]
        a_spec, b_spec = (self.a, square, [n + self.pad, 1]), (self.b, square, [n + self.pad, 1])
        outs = [self.out] + ([self.mask] if self.mask else [])
        out_specs = [(self.out, square)] + ([(self.mask, square, None, torch.bool)]
                                            if self.mask else [])

        def epilogue_of(y, out, mask=None, threshold=0.0):
            if mask is None:
                out.copy_(torch.nn.functional.gelu(y))
            else:
                out.copy_(torch.relu(y))
                mask.copy_(y > threshold)

        if template is not None and len(nodes) > 1:  # template + epilogue, one kernel
            choice = _swapped_choice(template)

            def fused(a, b, bias, *written):
                y = a @ b + bias + (1.0 if choice.fused_wrong else 0.0)
                if choice.fused_flip:  # the value nearest 0 a hair to the other side
                    flat = y.view(-1)
                    index = flat.abs().argmin()
                    flat[index] = -flat[index]
                epilogue_of(y, *written, threshold=0.5 if choice.mask_wrong else 0.0)

            kernel = FakeKernel([self.a, self.b, self.bias], outs)
            module = Module([a_spec, b_spec, (self.bias, [n]), *out_specs], fused)
        elif template is not None:  # the template alone
            def alone(a, b, out):
                out.copy_(a @ b)

            kernel = FakeKernel([self.a, self.b], [template.get_name()])
            module = Module([a_spec, b_spec, (template.get_name(), square)], alone)
        else:  # the epilogue alone, reading the template's buffer
            source = next(iter(nodes)).reads

            def epilogue(t, bias, *written):
                epilogue_of(t + bias, *written)

            kernel = FakeKernel([source, self.bias], outs)
            module = Module([(source, square), (self.bias, [n]), *out_specs], epilogue)
        fusion._note_kernel_args(lambda: None, kernel, (), {})  # the codegen hook
        return None, module


def _swapped_choice(template: Any) -> Any:
    render = template.make_kernel_render
    return next(c for c in template.choices
                if getattr(c, "make_kernel_render", None) is render)


def register_names(*buffers: Any) -> None:
    """Make buffer names known to the graph (``V.graph.get_dtype`` of kernel arguments)."""
    for buffer in buffers:
        V.graph.graph_inputs[buffer.get_name()] = buffer


def decided(result: FusionResult) -> bool:
    """Run a fusion decision as ``Scheduler.fuse_if_speedup`` does."""
    if result.callable_fn is not None:
        return bool(result.callable_fn())
    return bool(result.should_fuse)


def finite(value: Any) -> bool:
    return value is not None and math.isfinite(value)
