"""Run by test_fleet_distributed.py under ``torch.distributed.run`` (gloo, CPU): distributed
autotuning (``TORCHINDUCTOR_DISTRIBUTED_MAX_AUTOTUNE_GEMM=1``) inside a verified block.

The model's GEMMs reach ``tuned_mm`` with the C++ GEMM template and ATen (freezing, weights
as constants, mkldnn packing off): the case where torch alone fails with "incorrect local
autotuned nodes found". Each rank writes one JSON file: output matches eager, decisions.

    python -m torch.distributed.run --nproc_per_node=2 dist_probe.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch._inductor.config as inductor_config
import torch.distributed as dist

import inductor_sm_override as iso


class TwoMatmuls(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w1 = torch.nn.Parameter(torch.randn(64, 128))
        self.w2 = torch.nn.Parameter(torch.randn(128, 32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.w1) @ self.w2


def main() -> None:
    out_dir = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = TwoMatmuls().eval()
    x = torch.randn(16, 64)
    with torch.no_grad(), inductor_config.patch(freezing=True), \
            torch.backends.mkldnn.flags(enabled=False), iso.override():
        out = torch.compile(model, mode="max-autotune-no-cudagraphs")(x)
    with torch.no_grad():
        ok = torch.allclose(out, model(x), rtol=1e-4, atol=1e-3)
    result = {"rank": rank, "ok": bool(ok),
              "distributed": bool(inductor_config.distributed_max_autotune_gemm),
              "decisions": iso.decisions()}
    (out_dir / f"rank{rank}.json").write_text(json.dumps(result, default=str))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
