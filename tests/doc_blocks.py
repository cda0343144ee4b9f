"""The Python examples of the docs, as a reader would run them (see test_docs_examples.py).

One rule, written once, turns a GPU example into a CPU one where no CUDA GPU is visible
(:data:`CPU_RULE`); the names the docs leave to the reader (``MyModel``, ``model``, ``x``,
an HF ``config`` ...) are made on first use by :data:`PLACEHOLDERS`. Nothing else is
changed: an example that uses a name the package does not have fails, naming the file and
line.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("README.md", "docs/guide.md", "docs/api.md")

# The CPU rule: a CUDA device becomes the CPU, half precision becomes float32.
CPU_RULE: tuple[tuple[str, str], ...] = (
    (r"""device=(["'])cuda\1""", 'device="cpu"'),
    (r"\.cuda\(\)", ""),
    (r"\.half\(\)", ""),
    (r"\btorch\.(half|float16)\b", "torch.float32"),
)
# Examples that need a CUDA GPU whatever the rule does: green contexts (limit_sms).
GPU_ONLY = (r"\biso\.limit_sms\(",)


@dataclasses.dataclass(frozen=True)
class Block:
    doc: str
    line: int  # 1-based line of the block's first code line
    source: str

    @property
    def gpu_only(self) -> bool:
        return any(re.search(p, self.source) for p in GPU_ONLY)

    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def python_blocks(doc: str) -> list[Block]:
    """Every fenced ```python block of ``doc`` (indented ones inside lists too), dedented."""
    lines = (ROOT / doc).read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = re.match(r"^(\s*)```python\s*$", lines[i])
        if fence:
            indent, start = len(fence.group(1)), i + 1
            end = start
            while not re.match(r"^\s*```\s*$", lines[end]):
                end += 1
            body = "\n".join(ln[indent:] for ln in lines[start:end])
            blocks.append(Block(doc, start + 1, body + "\n"))
            i = end
        i += 1
    return blocks


def for_this_machine(source: str, cuda: bool) -> str:
    """The block as it runs here: unchanged with a CUDA GPU, else through :data:`CPU_RULE`."""
    if cuda:
        return source
    for pattern, replacement in CPU_RULE:
        source = re.sub(pattern, replacement, source)
    return source


# --- the reader's own objects -----------------------------------------------------------------

def _my_model_class(ns: dict[str, Any]) -> Any:
    import torch

    class MyModel(torch.nn.Module):
        """The reader's model: an MLP taking the docs' 1024 features."""

        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(1024, 256), torch.nn.GELU(),
                                           torch.nn.Linear(256, 1024))

        def forward(self, x: Any) -> Any:
            return self.net(x)

    return MyModel


def _device(ns: dict[str, Any]) -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _hf_config(ns: dict[str, Any]) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                       num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                       max_position_embeddings=64)


def _ids(ns: dict[str, Any]) -> Any:
    """Token ids for the HF examples, on the CPU like the model they build there."""
    import torch

    torch.manual_seed(0)
    return torch.randint(0, 64, (1, 8))


PLACEHOLDERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "MyModel": _my_model_class,
    "model": lambda ns: _placeholder(ns, "MyModel")().to(_device(ns)),
    "x": lambda ns: __import__("torch").randn(64, 1024, device=_device(ns)),
    "config": _hf_config,
    "ids": _ids,
    "mask": lambda ns: __import__("torch").ones_like(_placeholder(ns, "ids")),
    "optimizer": lambda ns: __import__("torch").optim.SGD(
        _placeholder(ns, "model").parameters(), lr=1e-3),
    "batch": lambda ns: _placeholder(ns, "x"),
}


def _placeholder(ns: dict[str, Any], name: str) -> Any:
    if name not in ns:
        ns[name] = PLACEHOLDERS[name](ns)
    return ns[name]


def provide_placeholders(source: str, ns: dict[str, Any]) -> list[str]:
    """Define, in ``ns``, the reader's objects the block uses and nobody defined yet."""
    made = []
    for name in PLACEHOLDERS:
        if name not in ns and re.search(rf"(?<![\w.]){name}\b", source):
            _placeholder(ns, name)
            made.append(name)
    return made
