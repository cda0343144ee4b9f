"""``inductor-sm-override run`` and ``hook status|install|uninstall``."""

from __future__ import annotations

import os
import site
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._hook import PTH_LINE, PTH_NAME
from ..api.env import parse_env
from ..core.errors import SettingsError
from ..core.settings import ENV_SWITCH, Settings, env_name, env_variables, near_misses


def run_env(options: Mapping[str, Any], base: Mapping[str, str]) -> dict[str, str]:
    """The environment for ``run``: the switch on and one variable per given option."""
    layer = {k: v for k, v in options.items() if v is not None}
    Settings.from_kwargs(**layer)  # validate here: bad options fail before the exec
    env = dict(base)
    env[ENV_SWITCH] = "1"
    for field, value in layer.items():
        env[env_name(field)] = ("1" if value else "0") if isinstance(value, bool) else str(value)
    return env


def exec_command(command: Sequence[str], env: Mapping[str, str]) -> None:
    """Replace this process with ``command`` (exit status and signals are the command's)."""
    os.execvpe(command[0], list(command), dict(env))


def site_dirs() -> list[Path]:
    """Directories whose .pth files this interpreter processes at start-up."""
    dirs = [Path(sysconfig.get_paths()["purelib"])]
    dirs += [Path(p) for p in site.getsitepackages() if Path(p) not in dirs]
    user = site.getusersitepackages()
    if site.ENABLE_USER_SITE and user:
        dirs.append(Path(user))
    return dirs


def installed_pth(dirs: Sequence[Path] | None = None) -> list[Path]:
    return [d / PTH_NAME for d in dirs or site_dirs() if (d / PTH_NAME).is_file()]


def install_pth(directory: Path) -> str:
    """Write the .pth into ``directory`` (idempotent). Returns what was done."""
    target = directory / PTH_NAME
    if target.is_file() and target.read_text() == PTH_LINE:
        return f"already installed: {target}"
    if not directory.is_dir():
        raise PermissionError(f"{directory} is not a directory")
    if not os.access(directory, os.W_OK):
        raise PermissionError(f"no write permission for {directory}")
    target.write_text(PTH_LINE)
    return f"installed: {target}"


def uninstall_pth(directory: Path) -> str:
    target = directory / PTH_NAME
    if not target.exists():
        return f"not installed: {target}"
    if not os.access(directory, os.W_OK):
        raise PermissionError(f"no write permission for {directory}")
    target.unlink()
    return f"removed: {target}"


def hook_status(environ: Mapping[str, str], site_dir: Path | None = None) -> dict[str, Any]:
    """Is the .pth installed (in ``site_dir``, else this interpreter's site dirs; current?),
    which variables are set, how they parse, and near-miss names."""
    found = installed_pth(None if site_dir is None else [site_dir])
    variables = env_variables(environ)
    try:
        enabled, settings = parse_env(environ)
        parsed: dict[str, Any] = {"enabled": enabled,
                                  "settings": settings.as_dict() if settings else None,
                                  "error": None}
    except SettingsError as exc:
        parsed = {"enabled": False, "settings": None, "error": str(exc)}
    return {
        "pth_installed": bool(found),
        "pth_files": [str(p) for p in found],
        "pth_current": all(p.read_text() == PTH_LINE for p in found) if found else None,
        "site_dirs": [str(d) for d in site_dirs()],
        "python": sys.executable,
        "variables": variables,
        "near_misses": near_misses(environ),
        **parsed,
    }
