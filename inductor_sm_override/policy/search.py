"""Rank GEMM template choices with an SM-aware cost model and keep the best ``max_choices``.

The model (documented in docs/search.md) estimates a relative time for a Triton GEMM
config ``(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages)`` on a problem
``(batch, M, N, K)`` and a GPU with ``sms`` SMs (the count the gate sees, so
``simulate_sms`` included):

- tiles = batch * ceil(M / BLOCK_M) * ceil(N / BLOCK_N)
- occupancy = CTAs resident per SM, limited by shared memory
  (num_stages * (BLOCK_M + BLOCK_N) * BLOCK_K * itemsize), threads (num_warps * 32) and
  an accumulator-register estimate
- waves = ceil(tiles / (sms * occupancy))  (wave quantization: a tile count just over a
  whole wave costs a whole extra wave)
- tile work = BLOCK_M * BLOCK_N * ceil(K / BLOCK_K) * BLOCK_K (padding to the tile counts:
  configs that fit M/N/K waste less)
- efficiency = min(1, AI / AI_REF) with AI = BLOCK_M * BLOCK_N / (BLOCK_M + BLOCK_N): bigger
  tiles reuse operands better, up to a point
- estimate = waves * tile work / efficiency

Lower is better; ties keep the original order (stable). Choices the model cannot parse
keep their original relative order after the parsed ones; extern (ATen) choices are never
ranked or dropped.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from typing import Any

SMEM_PER_SM = 100 * 1024  # sm_86/sm_89 (RTX 30xx/40xx, L4): 100 KB usable; sm_75 (T4): 64 KB
MAX_THREADS_PER_SM = 1536
REGS_PER_SM = 65536
AI_REF = 96.0
MAX_OCCUPANCY = 16

_FIELDS = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages")
_PATTERNS = {f: re.compile(rf"\b{f}\s*[=:]\s*(\d+)") for f in _FIELDS}


@dataclasses.dataclass(frozen=True)
class TileConfig:
    block_m: int
    block_n: int
    block_k: int
    num_warps: int = 4
    num_stages: int = 2


@dataclasses.dataclass(frozen=True)
class Problem:
    m: int
    n: int
    k: int
    batch: int = 1
    itemsize: int = 2
    sms: int = 46
    smem_per_sm: int = SMEM_PER_SM


def parse_config(choice: Any) -> TileConfig | None:
    """Read the tile config from a template choice's description (None if absent)."""
    text = str(getattr(choice, "description", "") or "")
    found = {}
    for field, pattern in _PATTERNS.items():
        match = pattern.search(text)
        if match:
            found[field] = int(match.group(1))
    if not {"BLOCK_M", "BLOCK_N", "BLOCK_K"} <= set(found):
        return None
    return TileConfig(
        found["BLOCK_M"], found["BLOCK_N"], found["BLOCK_K"],
        found.get("num_warps", 4), found.get("num_stages", 2),
    )


SMEM_EXTRA_BYTES = 128  # barriers (torch's own estimate adds the same)


def smem_bytes(cfg: TileConfig, itemsize: int) -> int:
    """Shared memory one CTA of ``cfg`` needs: the pipelined A and B tiles (the same
    estimate as torch's ``get_shared_memory_estimation`` without the TMA epilogue)."""
    return cfg.num_stages * (cfg.block_m + cfg.block_n) * cfg.block_k * itemsize + SMEM_EXTRA_BYTES


def device_smem_limit(device: Any) -> int | None:
    """Shared memory a block may opt into on a CUDA device (None when unknown)."""
    try:
        import torch

        props = torch.cuda.get_device_properties(torch.device(device))
    except Exception:
        return None
    for field in ("shared_memory_per_block_optin", "shared_memory_per_block"):
        value = getattr(props, field, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def occupancy(cfg: TileConfig, problem: Problem) -> int:
    """CTAs of this config that fit on one SM at once."""
    smem = cfg.num_stages * (cfg.block_m + cfg.block_n) * cfg.block_k * problem.itemsize
    by_smem = problem.smem_per_sm // smem if smem else MAX_OCCUPANCY
    threads = max(32, cfg.num_warps * 32)
    by_threads = MAX_THREADS_PER_SM // threads
    regs_per_thread = 32 + (cfg.block_m * cfg.block_n) // threads  # fp32 accumulators
    by_regs = REGS_PER_SM // (threads * regs_per_thread)
    return max(1, min(by_smem, by_threads, by_regs, MAX_OCCUPANCY))


def estimate(cfg: TileConfig, problem: Problem) -> float:
    """Relative time of ``cfg`` on ``problem`` (lower is better)."""
    tiles = problem.batch * math.ceil(problem.m / cfg.block_m) * math.ceil(problem.n / cfg.block_n)
    slots = max(1, problem.sms) * occupancy(cfg, problem)
    waves = math.ceil(tiles / slots)
    work = cfg.block_m * cfg.block_n * math.ceil(problem.k / cfg.block_k) * cfg.block_k
    intensity = cfg.block_m * cfg.block_n / (cfg.block_m + cfg.block_n)
    efficiency = min(1.0, intensity / AI_REF)
    return waves * work / efficiency


def rank(choices: Sequence[Any], problem: Problem | None) -> list[Any]:
    """Template choices best first: parsed ones by estimate (stable), then the rest in order."""
    if problem is None:
        return list(choices)
    scored, unparsed = [], []
    for index, choice in enumerate(choices):
        cfg = parse_config(choice)
        if cfg is None:
            unparsed.append(choice)
        else:
            scored.append((estimate(cfg, problem), index, choice))
    scored.sort(key=lambda item: (item[0], item[1]))
    return [c for _, _, c in scored] + unparsed


def _size(node: Any) -> list[int] | None:
    try:
        return [int(s) for s in node.get_size()]
    except Exception:  # symbolic sizes: no static problem
        return None


def problem_from(layout: Any, input_nodes: Sequence[Any], sms: int) -> Problem | None:
    """The GEMM problem of an autotuned op: output ``[..., M, N]``, K from the last input."""
    out = _size(layout) if layout is not None and hasattr(layout, "get_size") else None
    if out is None:
        try:
            out = [int(s) for s in layout.size]
        except Exception:
            return None
    if len(out) < 2:
        return None
    m, n = out[-2], out[-1]
    batch = math.prod(out[:-2]) if len(out) > 2 else 1
    k = None
    for node in reversed(list(input_nodes)):
        size = _size(node)
        if size and len(size) >= 2 and size[-1] == n:
            k = size[-2]
            break
    if k is None:
        return None
    try:
        itemsize = layout.dtype.itemsize
    except Exception:
        itemsize = 2
    return Problem(m=m, n=n, k=k, batch=batch, itemsize=itemsize, sms=sms)
