"""``iso.backend(**settings)``: a ``torch.compile`` backend with the settings bound to it.

``torch.compile(model, backend=iso.backend(max_choices=8))`` compiles with Inductor in
max-autotune mode (``mode="max-autotune-no-cudagraphs"`` by default) under the given
settings, merged over those in force where ``iso.backend(...)`` is called (a block's, else
the environment layer's). Every compile of that compiled function (the first call, new
shapes, recompiles much later, a backward compiled lazily, in any thread, inside or
outside any block) runs under them: compile_scope.py applies them for exactly that
compile, and holds the toolkit's patches only while it runs. Calling the compiled
function does no toolkit work.

``torch.compile`` passes its ``mode=`` / ``options=`` to a callable backend as keyword
arguments (``torch._TorchCompileWrapper``, 2.4-2.15; 2.15 also ``name=``); they replace the
backend's own mode and extend its options for that compile (``mode="default"`` never
arrives: the wrapper drops it; ``iso.backend(mode="default")`` compiles without autotuning).
Both are Inductor config patches for the compile and its later graphs, validated as
torch.compile does. ``name`` becomes ``compile_fx``'s ``compile_region_name`` where it has one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..compile_scope import Binding, compile_bound
from ..core import state
from ..core.budget import Budget
from ..core.settings import Settings
from ..torch_plan import compat

DEFAULT_MODE = "max-autotune-no-cudagraphs"
log = logging.getLogger("inductor_sm_override")


class backend:  # noqa: N801 - lower-case like torch's backends: iso.backend(...)
    """A ``torch.compile`` backend: Inductor under override settings bound to it.

    ``mode``: a torch.compile mode (default ``"max-autotune-no-cudagraphs"``; ``"max-autotune"``
    adds CUDA graphs); ``options``: Inductor options as for ``torch.compile(options=...)``;
    every other keyword is an override setting (see :class:`Settings`). ``budget_s`` is one
    budget for all compiles of the compiled function.
    """

    def __init__(self, *, mode: str | None = DEFAULT_MODE,
                 options: Mapping[str, Any] | None = None, **settings: Any) -> None:
        layer = Settings.validate_layer(**settings)
        below = state.current()  # made inside a block (or under the env layer): inherit it
        self.settings: Settings | None = (below or Settings()).merged(layer)
        self.mode = mode
        self.options = dict(options or {})
        self.config = compat.inductor_mode_config(mode, self.options)  # bad options: now
        self.budget = (Budget(self.settings.budget_s)
                       if self.settings.budget_s is not None else None)
        compat.check_plan(compat.current_plan(), self.settings)  # strict raises here

    @classmethod
    def plain(cls, mode: str | None, options: Mapping[str, Any] | None = None) -> backend:
        """Inductor as plain torch (no settings, whatever block or env layer is in force):
        ``iso.compile``'s plain stage."""
        self = cls(mode=mode, options=options, verify=False)
        self.settings = self.budget = None
        return self

    def __repr__(self) -> str:
        return f"iso.backend(mode={self.mode!r}, settings={self.settings!r})"

    def _config_for(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(kwargs) - {"mode", "options", "name"})
        if unknown:  # a newer torch passing more: compile on, without them
            log.warning("iso.backend: ignoring torch.compile argument(s) %s", unknown)
        if "mode" not in kwargs and "options" not in kwargs:
            return dict(self.config)
        mode = kwargs.get("mode") or self.mode
        options = {**self.options, **(kwargs.get("options") or {})}
        return compat.inductor_mode_config(mode, options)

    def __call__(self, model: Any, example_inputs: Any, **kwargs: Any) -> Any:
        binding = Binding(self.settings, self.budget, bound=True,
                          config=self._config_for(kwargs))
        return compile_bound(model, example_inputs, binding, region=kwargs.get("name"))

    def reset(self) -> None:
        """Called by ``torch._dynamo.reset()``: drop CUDA-graph trees, as Inductor's own
        torch.compile wrapper does."""
        from torch._inductor import config

        uses = self.config.get("triton.cudagraphs", config.triton.cudagraphs)
        if uses:
            from torch._inductor.cudagraph_trees import reset_cudagraph_trees

            reset_cudagraph_trees()
