"""Recipe: a script started by ``accelerate launch`` or ``torchrun`` (one process per rank).

    TORCHINDUCTOR_FREEZING=1 INDUCTOR_SM_OVERRIDE=1 \
    INDUCTOR_SM_OVERRIDE_REPORT='runs/iso-{rank}.jsonl' \
        torchrun --standalone --nproc_per_node=2 tests/recipes/launch_recipe.py
    accelerate launch --num_processes 1 --cpu --dynamo_backend inductor \
        --dynamo_mode max-autotune tests/recipes/launch_recipe.py --accelerate

Plain ``torch.distributed`` (gloo) for torchrun (``--single``: no process group); with
``--accelerate`` the model is compiled by ``Accelerator.prepare`` from the launcher's
``--dynamo_*`` flags. The script knows nothing of inductor_sm_override. Inference under
``torch.no_grad()`` (with freezing on CPU, where Inductor's C++ GEMM template needs frozen
weights).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch
from _tiny import finish


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(),
                               torch.nn.Linear(32, 32)).eval()


def main(argv: list[str]) -> int:
    model = _model()
    x = torch.randn(8, 32)
    with torch.no_grad():
        expected = model(x)
    distributed = "--single" not in argv and "--accelerate" not in argv
    result: dict = {"recipe": "accelerate" if "--accelerate" in argv else
                    "torchrun" if distributed else "single"}
    if "--accelerate" in argv:
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=True)
        compiled = accelerator.prepare(model)
        result["dynamo"] = {"backend": str(accelerator.state.dynamo_plugin.backend.value),
                            "mode": accelerator.state.dynamo_plugin.mode}
        result["world"] = accelerator.num_processes
    else:
        if distributed:
            import torch.distributed as dist

            dist.init_process_group("gloo")
            result["world"] = dist.get_world_size()
        compiled = torch.compile(model, mode="max-autotune-no-cudagraphs")
    result["compiled"] = type(compiled).__name__
    with torch.no_grad():
        out = compiled(x)
    result["max_abs_err"] = float((out - expected).abs().max())
    if distributed:
        import torch.distributed as dist

        total = torch.tensor([1.0])
        dist.all_reduce(total)  # every rank got here
        result["ranks_done"] = int(total.item())
        dist.destroy_process_group()
    finish(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
