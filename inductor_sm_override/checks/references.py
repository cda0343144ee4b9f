"""Reference (extern) choices the toolkit adds so that a template is never taken unchecked.

Inductor takes a sole choice without benchmarking it (``AlgorithmSelectorCache.__call__``
returns it at once: 2.11 ``select_algorithm.py:2920``, 2.13 ``:3897``), so the toolkit's
check never runs on it: with ``max_autotune_gemm_backends`` excluding ATen, with a template
received from another rank (distributed autotuning), or when the cap or the budget leaves
one template and no extern. For the ops below the toolkit binds the extern kernel Inductor
itself offers for that op to the same inputs and layout; Inductor then benchmarks both, the
template is checked against the extern's output, and the extern stands in for it if it
fails. Built exactly as the lowerings build theirs (read in 2.11 and 2.13):

- ``mm``, ``bmm``, ``int_mm``: ``kernel/mm.py`` ``aten_mm``, ``kernel/bmm.py`` ``aten_bmm``,
  ``kernel/mm.py`` ``aten__int_mm`` on the selector's ``(mat1, mat2)``;
- ``addmm``: ``aten_addmm`` on ``(inp_expanded, mat1, mat2)`` with the lowered node's
  ``alpha``/``beta``;
- ``packed_linear`` (CPU, freezing): MKL's ``mkl::_mkl_linear`` on ``(x, packed_w, orig_w)``
  with the lowered node's ``batch_size``, as ``mkldnn_lowerings.py``'s ``aten_mkl_linear``
  (a local there, so the toolkit makes its own ``ExternKernelChoice`` once per process,
  with the same kernel and kernel creator).

Other ops get None: their sole template stays unchecked, and is recorded so. The same
references check templates offered without any extern in ops that have no float64
evaluation (``addmm``, ``packed_linear``): there the toolkit's check had nothing to compare
with.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger("inductor_sm_override")

# Ops whose template choices are verified: the GEMM family the gate opens (GPU) and the
# CPU GEMMs Inductor autotunes. Names as passed to autotune_select_algorithm (2.11, 2.13).
VERIFIED_OPS = frozenset({
    "mm", "addmm", "bmm", "baddbmm", "mm_plus_mm", "int_mm", "scaled_mm", "grouped_mm",
    "scaled_grouped_mm", "convolution",
    "packed_linear", "linear_unary", "linear_binary", "qlinear_unary", "qlinear_binary",
    "grouped_gemm", "_weight_int8pack_mm", "_weight_int4pack_mm_for_cpu",
})
MKL_REFERENCE_NAME = "inductor_sm_override_mkl_linear"
# ops verify.fp64_reference evaluates in float64: several templates without an extern are
# checked against that already
FP64_CHECKED = frozenset({"mm", "bmm", "int_mm", "mm_plus_mm"})
_made: dict[str, Any] = {}
_lock = threading.Lock()


def _lowered_node() -> Any:
    """The FX node Inductor is lowering now (None outside lowering)."""
    try:
        from torch._inductor.virtualized import V

        return V.graph.current_node
    except Exception:
        return None


def _is(node: Any, packet: Any) -> bool:
    """The FX node calls ``packet`` (an op overload packet), any overload."""
    target = getattr(node, "target", None)
    return target is packet or getattr(target, "overloadpacket", None) is packet


def _same_dtype(nodes: list[Any], layout: Any) -> bool:
    try:
        return all(n.get_dtype() == layout.dtype for n in nodes)
    except Exception:
        return False


def _mm_like(module: str, attr: str, nodes: list[Any], layout: Any, same_dtype: bool) -> Any:
    import importlib

    if len(nodes) != 2 or (same_dtype and not _same_dtype(nodes, layout)):
        return None  # out_dtype variants use another extern
    choice = getattr(importlib.import_module(module), attr, None)
    return None if choice is None else choice.bind(tuple(nodes), layout)


def _addmm(nodes: list[Any], layout: Any) -> Any:
    import torch
    from torch._inductor.kernel.mm import aten_addmm

    node = _lowered_node()
    if len(nodes) != 3 or not _is(node, torch.ops.aten.addmm):
        return None
    kwargs = dict(node.kwargs)
    return aten_addmm.bind(tuple(nodes), layout, alpha=kwargs.get("alpha", 1),
                           beta=kwargs.get("beta", 1))


def _mkl_linear_choice() -> Any:
    with _lock:
        if MKL_REFERENCE_NAME not in _made:
            import torch
            from torch._inductor import mkldnn_ir
            from torch._inductor.select_algorithm import ExternKernelChoice

            _made[MKL_REFERENCE_NAME] = ExternKernelChoice(
                torch.ops.mkl._mkl_linear, "mkl::_mkl_linear", name=MKL_REFERENCE_NAME,
                has_out_variant=False, kernel_creator=mkldnn_ir.MKLPackedLinear.create)
        return _made[MKL_REFERENCE_NAME]


def _packed_linear(nodes: list[Any], layout: Any) -> Any:
    import torch

    node = _lowered_node()
    if (len(nodes) != 3 or not torch._C.has_mkl or not _is(node, torch.ops.mkl._mkl_linear)
            or len(node.args) < 5):
        return None
    return _mkl_linear_choice().bind(tuple(nodes), layout, B=None, batch_size=node.args[4])


def reference_for(op_name: str, input_nodes: Any, layout: Any) -> Any | None:
    """An extern ``ChoiceCaller`` computing ``op_name`` on the selector's ``input_nodes``
    into ``layout``, or None where the toolkit has none for this op."""
    nodes = list(input_nodes or ())
    try:
        if op_name == "mm":
            return _mm_like("torch._inductor.kernel.mm", "aten_mm", nodes, layout, True)
        if op_name == "bmm":
            return _mm_like("torch._inductor.kernel.bmm", "aten_bmm", nodes, layout, True)
        if op_name == "int_mm":
            return _mm_like("torch._inductor.kernel.mm", "aten__int_mm", nodes, layout, False)
        if op_name == "addmm":
            return _addmm(nodes, layout)
        if op_name == "packed_linear":
            return _packed_linear(nodes, layout)
    except Exception:
        log.debug("no reference for %s", op_name, exc_info=True)
    return None
