"""Which frameworks are installed, and will their ``torch.compile`` reach the override?

For ``inductor-sm-override doctor``. Nothing here imports a framework: versions come from
the installed distributions' metadata, and each framework's compile setting from the same
environment variables the framework reads (see docs/recipes.md for the sources read).
The override only matters for a compile that autotunes GEMMs (``max_autotune`` or
``max_autotune_gemm``); ``mode="default"`` and ``mode="reduce-overhead"`` never do.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Any

INHERIT = "child processes and ranks (spawned or forked) inherit the variables"


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
    except Exception:
        return None


def mode_autotunes_gemms(mode: str | None, environ: Mapping[str, str] | None = None) -> bool:
    """Does ``torch.compile(mode=mode)`` autotune GEMMs (so the SM gate is consulted)?

    Read from this torch's own ``list_mode_options``; ``TORCHINDUCTOR_MAX_AUTOTUNE(_GEMM)=1``
    switches GEMM autotuning on for every mode.
    """
    environ = os.environ if environ is None else environ
    if "1" in (environ.get("TORCHINDUCTOR_MAX_AUTOTUNE"),
               environ.get("TORCHINDUCTOR_MAX_AUTOTUNE_GEMM")):
        return True
    if mode in (None, "", "default"):
        return False
    try:
        from torch._inductor import list_mode_options

        options = list_mode_options(mode)
    except Exception:
        return "max-autotune" in mode  # unknown to this torch: go by the name
    return bool(options.get("max_autotune") or options.get("max_autotune_gemm"))


def _says(mode: str | None, environ: Mapping[str, str]) -> str:
    if mode_autotunes_gemms(mode, environ):
        return f"mode={mode!r} autotunes GEMMs: the override applies"
    return f"mode={mode!r} does not autotune GEMMs: the override has nothing to lift"


def _transformers(environ: Mapping[str, str]) -> tuple[bool, str]:
    # TrainingArguments(torch_compile=True) without torch_compile_mode hands mode=None to
    # accelerate's TorchDynamoPlugin, which falls back to ACCELERATE_DYNAMO_MODE or "default"
    mode = environ.get("ACCELERATE_DYNAMO_MODE") or "default"
    return mode_autotunes_gemms(mode, environ), (
        f"Trainer(torch_compile=True) without torch_compile_mode: {_says(mode, environ)}; "
        "pass torch_compile_mode='max-autotune-no-cudagraphs'. generate: compile "
        "model.forward with a max-autotune mode. Runs in this process: the variables apply")


def _accelerate(environ: Mapping[str, str]) -> tuple[bool, str]:
    mode = environ.get("ACCELERATE_DYNAMO_MODE") or "default"
    return mode_autotunes_gemms(mode, environ), (
        f"`accelerate launch`: {INHERIT}; --dynamo_mode (now {_says(mode, environ)}); "
        "the launcher accepts 'max-autotune' but not 'max-autotune-no-cudagraphs' "
        "(use TorchDynamoPlugin(mode=...) in code)")


def _lightning(environ: Mapping[str, str]) -> tuple[bool | None, str]:
    return None, ("torch.compile(module, mode=...) in your script decides (max-autotune "
                  f"modes autotune GEMMs); Trainer ranks: {INHERIT}")


def _vllm(environ: Mapping[str, str]) -> tuple[bool, str]:
    on = environ.get("VLLM_ENABLE_INDUCTOR_MAX_AUTOTUNE", "1") != "0"
    return on, (
        f"workers: {INHERIT}; max_autotune only for compilation_config.compile_sizes "
        f"(static sizes) with VLLM_ENABLE_INDUCTOR_MAX_AUTOTUNE=1 (now {'on' if on else 'off'})"
        "; use a {pid} report path; vLLM's own compile cache ignores the override: "
        "VLLM_DISABLE_COMPILE_CACHE=1 or a fresh cache dir when switching")


def _sglang(environ: Mapping[str, str]) -> tuple[bool, str]:
    mode = environ.get("SGLANG_TORCH_COMPILE_MODE") or "max-autotune-no-cudagraphs"
    return mode_autotunes_gemms(mode, environ), (
        f"with --enable-torch-compile, SGLANG_TORCH_COMPILE_MODE {_says(mode, environ)}; "
        f"workers: {INHERIT}; use a {{pid}} report path")


# (distribution names tried in order, label, describe)
FRAMEWORKS: tuple[tuple[tuple[str, ...], str,
                        Callable[[Mapping[str, str]], tuple[bool | None, str]]], ...] = (
    (("transformers",), "transformers", _transformers),
    (("accelerate",), "accelerate", _accelerate),
    (("lightning", "pytorch-lightning"), "lightning", _lightning),
    (("vllm",), "vllm", _vllm),
    (("sglang",), "sglang", _sglang),
)


def detect(environ: Mapping[str, str] | None = None,
           version: Callable[[str], str | None] = installed_version) -> list[dict[str, Any]]:
    """One entry per installed framework: name, version, reaches (True/False/None: depends
    on your code) and a one-line detail. Never raises."""
    environ = os.environ if environ is None else environ
    found: list[dict[str, Any]] = []
    for names, label, describe in FRAMEWORKS:
        try:
            installed = next(((n, v) for n in names if (v := version(n))), None)
        except Exception:
            installed = None
        if installed is None:
            continue
        try:
            reaches, detail = describe(environ)
        except Exception as exc:  # doctor must never fail on a framework check
            reaches, detail = None, f"could not check ({type(exc).__name__}: {exc})"
        found.append({"name": label, "distribution": installed[0], "version": installed[1],
                      "reaches": reaches, "detail": detail})
    return found


def format_line(entry: dict[str, Any]) -> str:
    verdict = {True: "as set up now, reaches the override",
               False: "as set up now, does NOT reach the override",
               None: "depends on your compile call"}[entry["reaches"]]
    return f"framework {entry['name']} {entry['version']}: {verdict}: {entry['detail']}"
