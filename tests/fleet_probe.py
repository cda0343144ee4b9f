"""Run in a subprocess by test_fleet_redis.py: one compile, print what the caches did.

    python fleet_probe.py '<spec JSON>'

spec: {"settings": {...} or null (no override), "train": bool, "autotune": bool,
       "save_bundle": path, "load_bundle": path}. ``autotune``: an inference graph whose
GEMMs Inductor really autotunes on the CPU (freezing, mkldnn packing off so the graph stays
cacheable: C++ GEMM template vs ATen addmm). Inductor's cache dir and remote caches come from the
environment. Prints one JSON line: Inductor's FX-graph-cache counters, the cache_hit and
cache_refused events, the graphs this process wrote into its local cache dir (each entry
carries its manifest), the autotune decisions, and whether the output (and gradients)
matched eager.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch._inductor.config as inductor_config
from torch._dynamo.utils import counters

import inductor_sm_override as iso
from inductor_sm_override.hooks import cache


def main() -> None:
    spec = json.loads(sys.argv[1])
    if spec.get("load_bundle"):
        loaded = torch.compiler.load_cache_artifacts(Path(spec["load_bundle"]).read_bytes())
        assert loaded is not None, "the bundle did not load"
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU())
    x = torch.randn(8, 32)
    train = bool(spec.get("train"))
    autotune = bool(spec.get("autotune"))
    model.train(train)
    settings = spec.get("settings")
    block = iso.override(**settings) if settings is not None else contextlib.nullcontext()
    grad = torch.enable_grad() if train else torch.no_grad()
    with contextlib.ExitStack() as stack:
        stack.enter_context(grad)
        stack.enter_context(inductor_config.patch(freezing=autotune))
        if autotune:  # packed mkldnn weights would bypass the FX graph cache
            stack.enter_context(torch.backends.mkldnn.flags(enabled=False))
        compiled = torch.compile(model, mode="max-autotune-no-cudagraphs")
        with block:
            started = time.perf_counter()
            out = compiled(x)
            first_call_s = time.perf_counter() - started
            if train:
                out.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()] if train else []
    model.zero_grad(set_to_none=True)
    with grad:
        ref = model(x)
        if train:
            ref.sum().backward()
    now = [p.grad for p in model.parameters()] if train else []
    ok = torch.allclose(out, ref, atol=1e-5) and all(
        torch.allclose(g, h, atol=1e-5) for g, h in zip(grads, now, strict=True))
    if spec.get("save_bundle"):
        saved = torch.compiler.save_cache_artifacts()
        assert saved is not None, "nothing to save"
        Path(spec["save_bundle"]).write_bytes(saved[0])
    root = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]) / "fxgraph"
    loaded = {hit["key"] for hit in cache.cache_hits()}
    written = sorted(p.name for p in root.glob("*/*") if p.is_dir() and p.name not in loaded)
    print(json.dumps({
        "hit": counters["inductor"]["fxgraph_cache_hit"],
        "miss": counters["inductor"]["fxgraph_cache_miss"],
        "bypass": counters["inductor"]["fxgraph_cache_bypass"],
        "hits": cache.cache_hits(),
        "refused": cache.cache_refusals(),
        "written": written,
        "decisions": [{k: d[k] for k in ("name", "winner", "origin", "winner_unchecked")}
                      for d in iso.decisions()],
        "ok": ok,
        "pid": os.getpid(),
        "first_call_s": round(first_call_s, 3),
    }, default=str))


if __name__ == "__main__":
    main()
