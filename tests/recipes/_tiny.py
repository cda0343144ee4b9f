"""Shared by the recipe scripts: a tiny random-weight causal LM (never a hub download)."""

from __future__ import annotations

import json
import os
import sys


def tiny_llama(seed: int = 0):
    """A 1-layer Llama with random weights: a few Linear GEMMs, compiles in seconds."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    # every Linear is 32x32: fewer distinct GEMM kernels to build and autotune
    config = LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=32, pad_token_id=0, bos_token_id=1,
                         eos_token_id=2)
    return LlamaForCausalLM(config)


def finish(result: dict) -> None:
    """Print one JSON line of what this process saw (the tests read the last line)."""
    import inductor_sm_override as iso

    status = iso.status()
    result.update(pid=os.getpid(), rank=os.environ.get("RANK"), patched=status["patched"],
                  base=status["base"], torch=__import__("torch").__version__)
    # one write(2) of the whole line: ranks sharing a pipe cannot interleave inside it
    # (atomic up to PIPE_BUF, 4096 bytes on Linux)
    sys.stdout.flush()
    os.write(sys.stdout.fileno(), (json.dumps(result, default=str) + "\n").encode())
