"""Recipe: HuggingFace ``Trainer`` with ``torch_compile_mode="max-autotune-no-cudagraphs"``.

    TORCHINDUCTOR_FREEZING=1 INDUCTOR_SM_OVERRIDE=1 INDUCTOR_SM_OVERRIDE_REPORT=runs/trainer.jsonl \
        python tests/recipes/trainer_recipe.py OUT_DIR [--mode MODE] [--no-eval]
    inductor-sm-override report runs/trainer.jsonl

A few training steps of a tiny random-weight Llama, then an evaluation by a second
``Trainer`` on a fresh copy of the trained weights, as an evaluation script that loads the
checkpoint would do. (In transformers 5.x, ``trainer.evaluate()`` after ``trainer.train()``
runs the *uncompiled* model: the evaluation loop compiles only when its accelerator has
prepared no model yet, and a model once prepared is marked ``_is_accelerate_prepared``, so
even a second ``Trainer`` on the same object does not compile it.) The script knows
nothing of inductor_sm_override. On CPU the training GEMMs have no template to try
(Inductor's C++ GEMM template needs frozen weights): they are autotune events with the
ATen choice only. The evaluation, compiled under
``torch.no_grad()`` with ``TORCHINDUCTOR_FREEZING=1``, really benchmarks templates. On a
GPU the training GEMMs (forward and backward) get Triton templates too.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch
from _tiny import finish, tiny_llama

STEPS = 3
SEQ = 8


def _data(n: int) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    rows = torch.randint(3, 32, (n, SEQ), generator=gen)
    return [{"input_ids": r, "labels": r.clone()} for r in rows]


def main(argv: list[str]) -> int:
    from transformers import Trainer, TrainingArguments

    out_dir = argv[0]
    mode = argv[argv.index("--mode") + 1] if "--mode" in argv else "max-autotune-no-cudagraphs"
    args = TrainingArguments(
        output_dir=out_dir, max_steps=STEPS, per_device_train_batch_size=2,
        per_device_eval_batch_size=2, learning_rate=1e-3, logging_steps=1,
        save_strategy="no", report_to=[], use_cpu=True, dataloader_num_workers=0,
        torch_compile=True, torch_compile_mode=mode,
    )
    trainer = Trainer(model=tiny_llama(), args=args, train_dataset=_data(2 * STEPS),
                      eval_dataset=_data(2))
    train = trainer.train()
    result = {"recipe": "trainer", "mode": mode, "steps": train.global_step,
              "train_loss": train.training_loss,
              "compiled": type(trainer.model_wrapped).__name__}
    if "--no-eval" not in argv:
        fresh = tiny_llama()  # an evaluation job loading the checkpoint
        fresh.load_state_dict(trainer.model.state_dict())
        evaluator = Trainer(model=fresh, args=args, eval_dataset=_data(2))
        result["eval_loss"] = evaluator.evaluate()["eval_loss"]
        result["eval_compiled"] = type(evaluator.model_wrapped).__name__
    finish(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
