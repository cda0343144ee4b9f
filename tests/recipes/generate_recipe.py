"""Recipe: transformers inference, ``model.generate`` on a compiled model.

    TORCHINDUCTOR_FREEZING=1 INDUCTOR_SM_OVERRIDE=1 INDUCTOR_SM_OVERRIDE_REPORT=runs/gen.jsonl \
        python tests/recipes/generate_recipe.py
    inductor-sm-override report runs/gen.jsonl

The script knows nothing of inductor_sm_override: the variables do everything.
``TORCHINDUCTOR_FREEZING=1`` is only needed on CPU, where Inductor offers its C++ GEMM
template for frozen weights only; on a GPU leave it out. A static KV cache keeps the
decode shapes fixed, so the model compiles (and autotunes) once, not once per length.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch
from _tiny import finish, tiny_llama

NEW_TOKENS = 4


def main() -> int:
    model = tiny_llama().eval()
    prompt = torch.tensor([[1]])
    kwargs = {"max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS, "do_sample": False,
              "cache_implementation": "static"}
    with torch.no_grad():
        eager = model.generate(prompt, **kwargs)
        model.forward = torch.compile(model.forward, mode="max-autotune-no-cudagraphs")
        out = model.generate(prompt, **kwargs)
    finish({"recipe": "generate", "tokens": out.shape[-1] - prompt.shape[-1],
            "same_as_eager": bool(torch.equal(out, eager))})
    return 0


if __name__ == "__main__":
    sys.exit(main())
