"""iso.compile on HuggingFace transformers models (random weights from tiny configs, CPU).

Inference runs with freezing on, so Inductor autotunes its C++ GEMM template against MKL
(real choices, real benchmarking). Compiled models are shared per module (module-scoped
fixtures) and released before each test ends (conftest checks nothing stays patched).
"""

from __future__ import annotations

import pytest
import torch
import torch._inductor.config as inductor_config

import inductor_sm_override as iso
from inductor_sm_override.checks.outputs import tensors

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.slow

VOCAB = 64
TOKENS = dict(bos_token_id=0, eos_token_id=0, pad_token_id=0)


def _ids(length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(1, VOCAB, (2, length), generator=torch.Generator().manual_seed(seed))


def _inference(model, args, kwargs=None, later=(), freezing=True):
    """iso.compile under no_grad (+ freezing: the C++ GEMM template competes); then later
    calls; the results; patches released."""
    torch._dynamo.reset()
    iso.clear_decisions()
    with torch.no_grad(), inductor_config.patch(freezing=freezing):
        compiled = iso.compile(model, args, example_kwargs=kwargs)
        at_compile = iso.decisions()
        out = compiled(*args, **(kwargs or {}))
        eager = model(*args, **(kwargs or {}))
        calls = []
        for ids in later:
            mask = torch.ones_like(ids)
            calls.append((compiled(ids, attention_mask=mask), model(ids, attention_mask=mask),
                          len(iso.decisions())))
    return {"compiled": compiled, "decisions": at_compile, "out": out, "eager": eager,
            "calls": calls, "all_decisions": iso.decisions(), "freezing": freezing}


def _assert_checked_override(result):
    compiled = result["compiled"]
    assert compiled.used == "override", compiled.checks
    check = compiled.checks[0]
    assert check.passed and check.reference == "fp64" and check.graphs >= 1
    assert check.max_abs is not None and check.max_abs < 1e-3
    assert "eager's own error" not in check.reason
    assert result["decisions"], "no GEMM was autotuned"
    if result["freezing"]:
        offered = {name for d in result["decisions"] for name in d["offered"]}
        assert any(name.startswith("cpp_") for name in offered)  # the C++ template competed
    for (path, got), (_, want) in zip(tensors(result["out"]), tensors(result["eager"]),
                                      strict=True):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4, msg=path)


def test_gpt2_training_step():  # first: before other tests mark GPT-2's dims dynamic
    """Train mode (dropout on): checked under one seed with gradients; backward GEMMs
    compiled under the settings; one optimizer step through the compiled model, no
    second compile."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=VOCAB,
                                     n_positions=32, **TOKENS)
    model = transformers.GPT2LMHeadModel(config).train()
    ids = _ids(8)
    torch._dynamo.reset()
    iso.clear_decisions()
    compiled = iso.compile(model, (ids,), example_kwargs={"labels": ids, "use_cache": False})
    at_compile = iso.decisions()
    assert compiled.trains and compiled.stochastic == "seeded"
    assert compiled.used == "override", [c.reason for c in compiled.checks]
    check = compiled.checks[0]
    assert check.reference == "eager (same seed)" and check.max_abs < 1e-3
    assert check.grad_max_abs is not None and check.grad_max_abs < 1e-3
    assert any(d["name"] == "mm" for d in at_compile)  # backward GEMMs
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = model.lm_head.weight.detach().clone()
    loss = compiled(ids, labels=ids, use_cache=False).loss
    loss.backward()
    opt.step()
    assert not torch.equal(before, model.lm_head.weight)
    assert len(iso.decisions()) == len(at_compile)  # compiled once


def test_guide_training_example_runs_its_first_step_without_compiling_again():
    """docs/guide.md's training example: iso.compile(model.train(), (ids,),
    example_kwargs={"labels": ids}), then compiled(ids, labels=ids).loss.backward(). Before
    the fix the check compiled on inputs cloned one by one (ids and labels no longer one
    tensor), so dynamo's guard failed at the first step ("Duplicate tensors found") and the
    model compiled (and autotuned) a second time."""
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=1, num_attention_heads=2,
                                      num_key_value_heads=1, vocab_size=VOCAB,
                                      max_position_embeddings=64, **TOKENS)
    model = transformers.LlamaForCausalLM(config)
    ids = _ids(8)
    torch._dynamo.reset()
    iso.clear_decisions()
    compiled = iso.compile(model.train(), (ids,), example_kwargs={"labels": ids})
    assert compiled.used == "override" and compiled.trains, compiled.checks
    decided, graphs = len(iso.decisions()), counters["stats"]["unique_graphs"]
    assert decided > 0
    loss = compiled(ids, labels=ids).loss
    loss.backward()
    assert counters["stats"]["unique_graphs"] == graphs  # no second compile
    assert len(iso.decisions()) == decided
    assert model.lm_head.weight.grad is not None


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=VOCAB,
                                     n_positions=32, **TOKENS)
    model = transformers.GPT2Model(config).eval()
    ids = _ids(8)
    return _inference(model, (ids,), {"attention_mask": torch.ones_like(ids)},
                      later=(_ids(11, 1),))


def test_gpt2_uses_the_override_with_its_kv_cache_compared(gpt2):
    """Case 1: the DynamicCache in the output is compared by its tensors, not with !=."""
    _assert_checked_override(gpt2)
    paths = [p for p, _ in tensors(gpt2["out"])]
    assert any(p.endswith("layers[0].keys") for p in paths), paths  # the KV cache's tensors


def test_generation_style_calls_recompile_under_the_settings(gpt2):
    counts = [len(gpt2["decisions"])]
    for got, want, decided in gpt2["calls"]:
        torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state,
                                   rtol=1e-3, atol=1e-4)
        counts.append(decided)
    assert counts[1] > counts[0]  # the new length was compiled (and autotuned) again
    for decision in gpt2["all_decisions"]:
        for shape in decision["shapes"]:
            assert shape is not None and all(isinstance(s, (int, str)) for s in shape)


def test_llama_family_decoder():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=1, num_attention_heads=2,
                                      num_key_value_heads=1, vocab_size=VOCAB,
                                      max_position_embeddings=64, **TOKENS)
    model = transformers.LlamaModel(config).eval()
    _assert_checked_override(_inference(model, (_ids(8),), {"use_cache": False},
                                        freezing=False))


def test_bert_encoder():
    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64,
                                     vocab_size=VOCAB, max_position_embeddings=64,
                                     pad_token_id=0)
    model = transformers.BertModel(config).eval()
    ids = _ids(8)
    _assert_checked_override(_inference(model, (ids,), {"attention_mask": torch.ones_like(ids)},
                                        freezing=False))
