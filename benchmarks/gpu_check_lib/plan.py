"""The steps of a gpu-check run, in order of value, and what each is estimated to cost."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .cases import Sizes
from .step_autotune import step_autotune_cost
from .step_emulation import step_emulation
from .step_pytest import step_pytest
from .step_training import step_training

if TYPE_CHECKING:
    from .run import Run

PLAN_LIMIT_S = 300.0  # what the plan may total (the run's own limit is 360 s: 60 s of slack)


@dataclasses.dataclass(frozen=True)
class Step:
    key: str
    title: str
    run: Callable[[Run], None]
    estimate: Callable[[Sizes], float]


STEPS = [
    Step("pytest", "pytest -m gpu (real gate, corrupted and fused kernels, limit_sms, GPU "
         "defects)",
         step_pytest, lambda s: s.pytest_s),
    Step("emulation", "46-SM emulation: GEMMs and blocks x gated/forced+verify/cap8+verify/"
         "fastest", step_emulation, lambda s: sum(sum(c.estimate_s.values()) for c in s.cases)),
    Step("autotune", "autotune cost: one GEMM, EXHAUSTIVE (budget-capped) vs max_choices=8, "
         "verify on/off", step_autotune_cost, lambda s: sum(s.cost_estimate_s.values())),
    Step("training", "training step of the MLP block (forward + backward GEMM decisions)",
         step_training, lambda s: sum(s.train_estimate_s.values())),
]


def plan_rows(sizes: Sizes) -> list[dict[str, Any]]:
    rows = [{"step": "start-up", "title": "imports, CUDA init, warm-up compile",
             "estimate_s": sizes.startup_s}]
    rows += [{"step": s.key, "title": s.title, "estimate_s": round(s.estimate(sizes), 1)}
             for s in STEPS]
    return rows
