"""Recipe: PyTorch Lightning, ``torch.compile`` of a LightningModule.

    TORCHINDUCTOR_FREEZING=1 INDUCTOR_SM_OVERRIDE=1 INDUCTOR_SM_OVERRIDE_REPORT=runs/pl.jsonl \
        python tests/recipes/lightning_recipe.py
    inductor-sm-override report runs/pl.jsonl

Two training steps, then ``trainer.predict`` (Lightning runs it under
``torch.inference_mode()``: on CPU, with freezing, that compile benchmarks Inductor's C++
GEMM template; the training GEMMs offer only ATen on CPU). The script knows nothing of
inductor_sm_override.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch
from _tiny import finish


def main() -> int:
    import lightning
    from torch.utils.data import DataLoader, TensorDataset

    class Tiny(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(),
                                           torch.nn.Linear(32, 32))

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, _index):
            (x,) = batch
            return self(x).pow(2).mean()

        def predict_step(self, batch, _index):
            (x,) = batch
            return self(x)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(16, 32)), batch_size=8)
    module = Tiny()
    compiled = torch.compile(module, mode="max-autotune-no-cudagraphs")
    trainer = lightning.Trainer(accelerator="cpu", devices=1, max_steps=2, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(compiled, data)
    preds = trainer.predict(compiled, data)
    with torch.no_grad():
        eager = module.net(next(iter(data))[0])
    finish({"recipe": "lightning", "steps": trainer.global_step, "predicted": len(preds),
            "max_abs_err": float((preds[0] - eager).abs().max()),
            "lightning": lightning.__version__})
    return 0


if __name__ == "__main__":
    sys.exit(main())
