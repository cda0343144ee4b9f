"""``inductor-sm-override doctor``: why is this GPU gated, and what would the override change?"""

from __future__ import annotations

import os
import platform
from typing import Any

from ..api.block import override
from ..core import __version__
from ..core.settings import near_miss_line
from ..torch_plan import compat
from ..torch_plan.hardware import pre_ampere_note
from .frameworks import detect, format_line
from .launcher import hook_status
from .quiet import torch_autotune_output_hidden

CONFIG_KEYS = ("max_autotune", "max_autotune_gemm", "max_autotune_gemm_backends",
               "max_autotune_gemm_search_space", "autotune_in_subproc", "autotune_local_cache",
               "fx_graph_cache", "benchmark_epilogue_fusion", "freezing")


def _gate_answers(index: int, min_sms: int | None) -> dict[str, Any]:
    """torch's answer, the override's (min_sms=0), and at ``min_sms``, for GPU ``index``."""
    import torch._inductor.utils as utils

    def ask() -> bool:
        utils.is_big_gpu.cache_clear()
        return bool(utils.is_big_gpu(index))

    answers = {"torch": ask()}
    with override(min_sms=0, verify=False, quiet=True):
        answers["override"] = ask()
    if min_sms is not None:
        with override(min_sms=min_sms, verify=False, quiet=True):
            answers[f"min_sms={min_sms}"] = ask()
    utils.is_big_gpu.cache_clear()
    return answers


def collect(min_sms: int | None = None) -> dict[str, Any]:
    """Everything doctor reports, as a JSON-able dict. Works without a GPU."""
    import torch
    import torch._inductor.config as config

    plan = compat.current_plan()
    info: dict[str, Any] = {
        "package": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "hip": torch.version.hip,
        "support": plan.describe(),
        "version_table_entry": None if plan.entry is None else plan.entry.source,
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:
        info["triton"] = None
    gpus = []
    if torch.cuda.is_available():
        with torch_autotune_output_hidden():  # torch's "Not enough SMs" warning: we report it
            for index in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(index)
                gpus.append({"index": index, "name": props.name,
                             "sms": props.multi_processor_count,
                             "capability": f"{props.major}.{props.minor}",
                             "gate": _gate_answers(index, min_sms) if plan.supported else None,
                             "note": pre_ampere_note(props.name, props.major, props.minor)})
    info["gpus"] = gpus
    info["cpu_templates"] = cpu_templates(bool(getattr(config, "freezing", False)))
    info["hook"] = hook_status(os.environ)
    info["inductor_config"] = {k: getattr(config, k, None) for k in CONFIG_KEYS}

    info["frameworks"] = detect(os.environ)
    return info


def cpu_templates(freezing: bool) -> dict[str, Any]:
    """Whether Inductor would offer its C++ GEMM template on the CPU, and what to change."""
    if freezing:
        advice = ("freezing is on: Linear layers compiled under torch.no_grad() can get "
                  "Inductor's C++ template beside ATen/MKL (the override verifies it; the SM "
                  "gate does not apply to CPUs)")
    else:
        advice = ("freezing is off: Inductor offers no C++ GEMM template, so every CPU GEMM has "
                  "the single ATen choice (nothing to autotune or verify); set "
                  "torch._inductor.config.freezing = True (or TORCHINDUCTOR_FREEZING=1) and "
                  "compile under torch.no_grad() to autotune on the CPU")
    return {"freezing": freezing, "offered": freezing, "advice": advice}


def format_text(info: dict[str, Any]) -> str:
    support = info["support"]
    lines = [
        f"inductor_sm_override {info['package']}  python {info['python']}  torch {info['torch']}"
        f"  triton {info['triton'] or '-'}  cuda {info['cuda'] or '-'}",
        f"torch support: {'supported' if support['supported'] else 'NOT supported'}"
        f"{'' if support['tested'] else ' (untested release: layout matches)'}"
        + (f"; problems: {'; '.join(support['problems'])}" if support["problems"] else ""),
        f"binding sites that would be patched: {', '.join(support['sites']) or 'none'}",
        "autotune hooks: " + ", ".join(f"{k}={'yes' if v else 'no'}"
                                       for k, v in support["hooks"].items()),
    ]
    if not info["gpus"]:
        lines.append("GPUs: none visible (the gate only matters on a GPU; CPU templates "
                     "are not gated)")
    for gpu in info["gpus"]:
        gate = gpu["gate"] or {}
        said = ", ".join(f"{k}: {'templates' if v else 'gated'}" for k, v in gate.items())
        lines.append(f"GPU {gpu['index']}: {gpu['name']}, {gpu['sms']} SMs, sm_"
                     f"{gpu['capability'].replace('.', '')} -> {said or 'unknown'}")
        if gpu.get("note"):
            lines.append(f"  warning: {gpu['note']}")
    lines.append(f"CPU GEMM templates: {info['cpu_templates']['advice']}")
    hook = info["hook"]
    lines.append(f"start-up hook: {', '.join(hook['pth_files']) or 'not installed'}")
    if hook["variables"]:
        for name, value in hook["variables"].items():
            lines.append(f"  {name}={value}")
        lines.append(f"  -> {hook['error'] or ('on' if hook['enabled'] else 'off')}")
    else:
        lines.append("  no INDUCTOR_SM_OVERRIDE* variable set")
    if hook.get("near_misses"):
        lines.append(f"  warning: {near_miss_line(hook['near_misses'])}")
    lines.append("inductor config: " + ", ".join(f"{k}={v!r}"
                                                  for k, v in info["inductor_config"].items()))

    frameworks = info.get("frameworks") or []
    lines += [format_line(entry) for entry in frameworks] or [
        "frameworks: none of transformers, accelerate, lightning, vllm, sglang installed"]
    return "\n".join(lines)
