"""Real max-autotune compiles on the CPU (freezing makes Inductor autotune its C++ GEMM
template against MKL), shared by the tests that need one."""

from __future__ import annotations

from typing import Any

import torch
import torch._inductor.config as inductor_config
from torch._inductor.utils import run_and_get_code

import inductor_sm_override as iso

MODE = "max-autotune-no-cudagraphs"
TEMPLATE_MARK = "micro_gemm"  # in generated code when the C++ GEMM template is used
EXTERN_MARK = "_mkl_linear"  # in generated code when the extern (MKL) kernel is used


def compile_under(model: Any, x: Any, **settings: Any) -> tuple[Any, str, list[dict]]:
    """Compile and run ``model(x)`` inside ``iso.override(**settings)``.

    Returns the output, the generated code and the autotune decisions of this compile.
    """
    torch._dynamo.reset()
    iso.clear_decisions()
    with torch.no_grad(), inductor_config.patch(freezing=True), iso.override(**settings):
        out, code = run_and_get_code(torch.compile(model, mode=MODE), x)
    return out, "\n".join(code), iso.decisions()
