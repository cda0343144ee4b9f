"""Run in a subprocess by test_caches.py: compile a frozen MLP in a worker thread (or in the
main thread), print Inductor's FX-graph-cache counters and what the toolkit recorded.

    python worker_probe.py thread|main

The override comes only from the environment (INDUCTOR_SM_OVERRIDE=1 through the start-up
hook) when the caller sets it.
"""

from __future__ import annotations

import json
import sys
import threading

import torch

# Inductor's entry module imported by the main thread (the env layer goes in here, as in an
# application that compiled something before starting its workers)
import torch._inductor.compile_fx
import torch._inductor.config as inductor_config
from torch._dynamo.utils import counters

import inductor_sm_override as iso


def main() -> None:
    where = sys.argv[1]
    torch.manual_seed(0)
    torch.backends.mkldnn.enabled = False  # no mkldnn-packed weights: the graph is cacheable
    model = torch.nn.Sequential(torch.nn.Linear(256, 512, bias=False), torch.nn.ReLU(),
                                torch.nn.Linear(512, 256, bias=False)).eval()
    x = torch.randn(8, 256)
    seen: dict = {}

    def run() -> None:
        with torch.no_grad(), inductor_config.patch(freezing=True):
            compiled = torch.compile(model, mode="max-autotune-no-cudagraphs")
            seen["out"] = compiled(x)
            seen["post_pass_after"] = repr(inductor_config.post_grad_custom_post_pass)

    if where == "thread":
        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
    else:
        run()
    with torch.no_grad():
        torch.testing.assert_close(seen["out"], model(x))
    print(json.dumps({
        "hit": counters["inductor"]["fxgraph_cache_hit"],
        "miss": counters["inductor"]["fxgraph_cache_miss"],
        "bypass": counters["inductor"]["fxgraph_cache_bypass"],
        "autotuned": len(iso.decisions()),
        "cache_hits": len(iso.cache_hits()),
        "base": iso.status()["base"] is not None,
    }))


if __name__ == "__main__":
    main()
