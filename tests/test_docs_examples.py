"""Every Python example of README.md, docs/guide.md and docs/api.md runs (issue 23, "Also").

Each document runs top to bottom in one namespace, as a reader pasting its blocks into one
session would, in a scratch folder. Where no CUDA GPU is visible, each block goes through
the one CPU rule of doc_blocks.py (CUDA -> CPU, half -> float32); the reader's own objects
(``MyModel``, ``model``, ``x``, an HF ``config`` ...) are made on first use. An example
that fails, including one that uses a name the package does not have, fails this test
with its file and line. Examples that need green contexts (``iso.limit_sms``) run only on
a CUDA host; here they are syntax-checked and listed in the skip reason.
"""

from __future__ import annotations

import gc
import warnings

import pytest
import torch
from doc_blocks import DOCS, provide_placeholders, python_blocks

import inductor_sm_override as iso
from inductor_sm_override.testing import NoFaultInjectedWarning

CUDA = torch.cuda.is_available()


def _run_document(doc: str, tmp_path, monkeypatch) -> tuple[dict, list[str]]:
    from doc_blocks import for_this_machine

    monkeypatch.chdir(tmp_path)
    torch._dynamo.reset()
    iso.clear_decisions()
    ns: dict = {"__name__": f"docs_example_{doc.replace('/', '_')}"}
    not_here = []
    blocks = python_blocks(doc)
    assert blocks, f"{doc} has no python block"
    try:
        with warnings.catch_warnings():
            # a documented fault injection that hits nothing is a broken example
            warnings.simplefilter("error", NoFaultInjectedWarning)
            for block in blocks:
                source = for_this_machine(block.source, CUDA)
                code = compile(source, block.where(), "exec")  # a syntax error fails here
                if block.gpu_only and not CUDA:
                    not_here.append(block.where())
                    continue
                provide_placeholders(source, ns)
                try:
                    exec(code, ns)
                except Exception as exc:
                    pytest.fail(f"{block.where()}: this example fails: "
                                f"{type(exc).__name__}: {exc}\n--- as run here ---\n{source}",
                                pytrace=False)
        return dict(ns), not_here
    finally:
        ns.clear()
        gc.collect()


def _template_runs() -> list[str]:
    return [name for d in iso.decisions() for name, ms in d["timings"].items()
            if ms is not None and name not in d["externs"]]


@pytest.mark.slow
def test_readme_examples(tmp_path, monkeypatch, capsys):
    _ns, not_here = _run_document("README.md", tmp_path, monkeypatch)
    # "Try it on a CPU" really autotunes: the C++ template was timed (and verified)
    assert _template_runs(), "no template was benchmarked by the README's examples"
    assert (tmp_path / "runs" / "cpu.jsonl").is_file()
    assert not_here == ([] if CUDA else [b.where() for b in python_blocks("README.md")
                                         if b.gpu_only])


@pytest.mark.slow
def test_guide_examples(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    _run_document("docs/guide.md", tmp_path, monkeypatch)


@pytest.mark.slow
def test_api_examples(tmp_path, monkeypatch, capsys):
    ns, _ = _run_document("docs/api.md", tmp_path, monkeypatch)
    assert ns["corrupted"], "the documented fault injection corrupted nothing"
    assert set(ns["corrupted"]) <= set(iso.decisions()[-1]["rejected"])


def test_every_document_has_examples_and_the_cpu_rule_is_the_only_change():
    from doc_blocks import for_this_machine

    for doc in DOCS:
        assert python_blocks(doc), doc
    gpu = 'm = MyModel().cuda().half(); x = torch.randn(2, device="cuda", dtype=torch.half)\n'
    assert for_this_machine(gpu, cuda=False) == \
        'm = MyModel(); x = torch.randn(2, device="cpu", dtype=torch.float32)\n'
    assert for_this_machine(gpu, cuda=True) == gpu


def test_a_failing_example_is_named_not_hidden(tmp_path, monkeypatch):
    """An example using a name the package lacks fails with its file and line (how a block
    written for a newer API shows up before that API is merged)."""
    import doc_blocks

    doc = tmp_path / "example.md"
    doc.write_text("text\n\n```python\nimport inductor_sm_override as iso\n"
                   "iso.no_such_api(max_choices=8)\n```\n")
    monkeypatch.setattr(doc_blocks, "ROOT", tmp_path)
    with pytest.raises(pytest.fail.Exception) as failed:
        _run_document("example.md", tmp_path, monkeypatch)
    message = str(failed.value)
    assert message.startswith("example.md:4: this example fails: AttributeError")
    assert "no_such_api" in message
