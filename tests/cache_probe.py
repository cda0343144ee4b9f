"""Run in a subprocess by test_caches.py: one compile, print Inductor's cache counters.

    python cache_probe.py '<settings JSON or "plain">'
    python cache_probe.py '[<spec>, <spec>, ...]'   # compiles in turn, one line of counters each

A list compiles each spec after ``torch._dynamo.reset()`` (each compile looks its graph up in
the cache dir again) and prints a JSON list.
"""

from __future__ import annotations

import json
import sys

import torch
import torch._inductor.config as inductor_config
from torch._dynamo.utils import counters

import inductor_sm_override as iso


def compile_once(spec) -> dict:
    torch._dynamo.reset()
    counters.clear()
    iso.clear_decisions()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU()).eval()
    x = torch.randn(8, 32)
    block = iso.override(**spec) if isinstance(spec, dict) else None
    with torch.no_grad(), inductor_config.patch(freezing=False):  # freezing bypasses the cache
        compiled = torch.compile(model, mode="max-autotune-no-cudagraphs")
        if block is not None:
            with block:
                out = compiled(x)
        else:
            out = compiled(x)
    torch.testing.assert_close(out, model(x))
    return {
        "hit": counters["inductor"]["fxgraph_cache_hit"],
        "miss": counters["inductor"]["fxgraph_cache_miss"],
        "bypass": counters["inductor"]["fxgraph_cache_bypass"],
        "autotuned": len(iso.decisions()),
    }


def main() -> None:
    spec = json.loads(sys.argv[1])
    many = isinstance(spec, list)
    results = [compile_once(one) for one in (spec if many else [spec])]
    print(json.dumps(results if many else results[0]))


if __name__ == "__main__":
    main()
