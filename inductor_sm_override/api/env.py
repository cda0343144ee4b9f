"""The process-wide settings layer from INDUCTOR_SM_OVERRIDE* variables.

Installed by the start-up hook when Inductor's compile entry module is first imported, or
by hand with :func:`activate_from_env`. A bad value prints one line naming the variable,
the value and what is accepted, and leaves torch unpatched (``..._STRICT=1``: raises).
The layer only says which settings hold in threads outside any block; every compile, in
whichever thread it runs, applies them at Inductor's compile entry (compile_scope.py).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TextIO

from ..compile_scope import PATCHES
from ..core import state
from ..core.budget import Budget
from ..core.errors import SettingsError, UnsupportedTorchError
from ..core.settings import (
    ENV_PREFIX,
    Settings,
    env_layer,
    env_switch,
    env_variables,
    near_miss_line,
    parse_bool_word,
)
from ..torch_plan import compat

_held = False


def _strict(environ: Mapping[str, str]) -> bool:
    raw = environ.get(f"{ENV_PREFIX}_STRICT", "")
    try:
        return parse_bool_word(raw) if raw.strip() else False
    except ValueError:
        return False  # reported as a bad value by env_layer


def parse_env(environ: Mapping[str, str]) -> tuple[bool, Settings | None]:
    """(switched on, settings). Raises SettingsError for any bad variable."""
    switch = env_switch(environ)
    layer = env_layer(environ)
    if not switch:
        return False, None
    return True, Settings(**layer)


def describe_source(environ: Mapping[str, str]) -> str:
    names = sorted(env_variables(environ))
    return "environment: " + ", ".join(f"{n}={environ[n]}" for n in names)


def check_env(environ: Mapping[str, str], stream: TextIO | None = None) -> bool:
    """Validate the variables: True if usable; else one line on ``stream`` (strict: raise).
    Near-miss names (``INDUCTOR_SM_OVERIDE``) get one line too, and change nothing."""
    near = near_miss_line(environ)
    if near:
        print(f"inductor_sm_override: {near}", file=stream or sys.stderr)
    try:
        parse_env(environ)
    except SettingsError as exc:
        if _strict(environ):
            raise
        print(f"inductor_sm_override: {exc}; the override stays off", file=stream or sys.stderr)
        return False
    return True


def activate_from_env(environ: Mapping[str, str], stream: TextIO | None = None,
                      report_errors: bool = True) -> str:
    """Install the env layer. Returns "on", "off" or "error".

    A bad variable writes one line to ``stream`` (unless ``report_errors`` is False, when
    :func:`check_env` already did) or raises with strict.
    """
    stream = stream or sys.stderr
    strict = _strict(environ)
    try:
        enabled, settings = parse_env(environ)
    except SettingsError as exc:
        if strict:
            raise
        if report_errors:
            print(f"inductor_sm_override: {exc}; the override stays off", file=stream)
        return "error"
    if not enabled or settings is None:
        return "off"
    try:
        install_base(settings, describe_source(environ))
    except UnsupportedTorchError:
        raise  # only raised with strict
    except Exception as exc:
        if strict:
            raise
        print(f"inductor_sm_override: could not switch the override on "
              f"({type(exc).__name__}: {exc}); torch runs unchanged", file=stream)
        return "error"
    return "on"


def install_base(settings: Settings, source: str) -> None:
    """Make ``settings`` the process-wide base layer and install the patches for it."""
    global _held
    if state.base() is not None:
        uninstall_base()
    plan = compat.current_plan()
    patched = compat.check_plan(plan, settings)
    budget = Budget(settings.budget_s) if settings.budget_s is not None else None
    state.set_base(state.BaseLayer(settings, source, budget))
    if patched:
        PATCHES.acquire()  # the compile-entry wrapper applies the layer to every compile
        _held = True


def uninstall_base() -> None:
    """Remove the env layer and its patches (tests, ``hook`` tooling)."""
    global _held
    state.set_base(None)
    if _held:
        _held = False
        PATCHES.release()
