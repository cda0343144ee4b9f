"""The frozen, validated settings of an override block, from kwargs or from the environment.

This module must not import torch: the start-up hook parses the environment with it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from . import __version__
from .errors import SettingsError

ENV_PREFIX = "INDUCTOR_SM_OVERRIDE"
ENV_SWITCH = ENV_PREFIX
TRUE_WORDS = ("1", "true", "on", "yes")
FALSE_WORDS = ("0", "false", "off", "no")
SEARCH_SPACES = ("DEFAULT", "EXHAUSTIVE")
FLEET_SCOPES = ("node", "job")  # one decision leader per node / per job (fleet/)
_BOOL_WORDS = "one of " + "/".join(TRUE_WORDS + FALSE_WORDS) + " (any case)"


def _check_int(minimum: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise TypeError
        return value

    check.accepted = f"an integer >= {minimum}"  # type: ignore[attr-defined]
    return check


def _check_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise TypeError
    return value


_check_float.accepted = "a finite number >= 0"  # type: ignore[attr-defined]


def _check_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError
    return value


_check_bool.accepted = "True or False"  # type: ignore[attr-defined]


def _check_path(value: Any) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise TypeError
    return value


_check_path.accepted = "a non-empty file path"  # type: ignore[attr-defined]


def _check_search_space(value: Any) -> str:
    if not isinstance(value, str) or value.strip().upper() not in SEARCH_SPACES:
        raise TypeError
    return value.strip().upper()


_check_search_space.accepted = " or ".join(SEARCH_SPACES)  # type: ignore[attr-defined]


def resolve_path(path: str) -> str:
    """A report path with ``{rank}`` ($RANK, else 0) and ``{pid}`` replaced."""
    return path.replace("{rank}", os.environ.get("RANK", "0")).replace("{pid}", str(os.getpid()))


def report_path_problem(path: str) -> str | None:
    """Why the report file ``path`` cannot be written here, or None: checked up front."""
    target = Path(resolve_path(path))
    found = next(p for p in (target, *target.parents) if p.exists())  # the nearest existing
    if found == target and target.is_dir():
        return f"{target} is a folder, not a file"
    if found != target and not found.is_dir():
        return f"{found} is a file, not a folder"
    return None if os.access(found, os.W_OK) else f"{found} is not writable"


def _check_fleet(value: Any) -> str:
    if not isinstance(value, str) or value.strip().lower() not in FLEET_SCOPES:
        raise TypeError
    return value.strip().lower()


_check_fleet.accepted = " or ".join(FLEET_SCOPES)  # type: ignore[attr-defined]


def parse_bool_word(text: str) -> bool:
    """Parse an env-var boolean word; raises ValueError for anything else."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(text)


def _env_int(text: str) -> int:
    return int(text.strip(), 10)


def _env_float(text: str) -> float:
    return float(text.strip())


_ENV_PARSERS: dict[Callable[[Any], Any], Callable[[str], Any]] = {
    _check_float: _env_float,
    _check_bool: parse_bool_word,
    _check_path: str,
    _check_search_space: str,
    _check_fleet: str,
}

# field name -> (validator, may be None)
_FIELDS: dict[str, tuple[Callable[[Any], Any], bool]] = {
    "min_sms": (_check_int(0), False),
    "max_choices": (_check_int(0), True),
    "budget_s": (_check_float, True),
    "verify": (_check_bool, False),
    "rtol": (_check_float, True),
    "atol": (_check_float, True),
    "report": (_check_path, True),
    "simulate_sms": (_check_int(1), True),
    "strict": (_check_bool, False),
    "search_space": (_check_search_space, True),
    "quiet": (_check_bool, True),
    "require_manifest": (_check_bool, False),
    "fleet": (_check_fleet, True),
    "fleet_timeout_s": (_check_float, False),
}


def env_name(field: str) -> str:
    """The environment variable that maps to a settings field."""
    return f"{ENV_PREFIX}_{field.upper()}"


def _describe(check: Callable[[Any], Any]) -> str:
    return check.accepted  # type: ignore[attr-defined]


def accepted(field: str) -> str:
    """Human description of the values a field accepts."""
    check, optional = _FIELDS[field]
    return f"{_describe(check)} or None" if optional else _describe(check)


def validate_field(field: str, value: Any) -> Any:
    """Validate one field's value; raise SettingsError naming the field, value and accepted."""
    if field not in _FIELDS:
        known = ", ".join(_FIELDS)
        raise SettingsError(f"unknown setting {field!r}; known settings: {known}")
    check, optional = _FIELDS[field]
    if value is None and optional:
        return None
    try:
        return check(value)
    except (TypeError, ValueError):
        raise SettingsError(
            f"{field}={value!r} is not accepted: expected {accepted(field)}"
        ) from None


@dataclasses.dataclass(frozen=True)
class Settings:
    """Settings of one override block. Every field is validated at construction."""

    min_sms: int = 0
    max_choices: int | None = None
    budget_s: float | None = None
    verify: bool = True
    rtol: float | None = None
    atol: float | None = None
    report: str | None = None
    simulate_sms: int | None = None
    strict: bool = False
    search_space: str | None = None
    quiet: bool | None = None  # None: progress lines only when stderr is a terminal
    # a cache hit whose manifest is missing, corrupted or from another device / SM count /
    # settings is a miss (compiled and checked here) instead of a hit reported unverified
    require_manifest: bool = False
    # share autotune decisions (torchrun / SLURM): one rank per node or per job tunes, the
    # others wait up to fleet_timeout_s per op for its decision and check it (fleet/)
    fleet: str | None = None
    fleet_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = validate_field(field.name, getattr(self, field.name))
            object.__setattr__(self, field.name, value)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def validate_layer(cls, **kwargs: Any) -> dict[str, Any]:
        """Validate the explicitly given fields of one block (a partial layer)."""
        return {name: validate_field(name, value) for name, value in kwargs.items()}

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> Settings:
        """Build settings from keyword arguments (unknown names and bad values raise)."""
        return cls(**cls.validate_layer(**kwargs))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from the INDUCTOR_SM_OVERRIDE_* variables (unset ones keep defaults).

        A bad value raises SettingsError naming the variable, its value and what is accepted.
        The on/off switch INDUCTOR_SM_OVERRIDE is read by :func:`env_switch`, not here.
        """
        return cls(**env_layer(os.environ if environ is None else environ))

    def merged(self, layer: Mapping[str, Any]) -> Settings:
        """These settings with the fields of a (validated) layer on top."""
        return dataclasses.replace(self, **layer) if layer else self

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def compiled(self) -> dict[str, Any]:
        """The fields that change compiled code (what the FX-graph-cache salt covers)."""
        return {k: v for k, v in self.as_dict().items() if k not in NOT_COMPILED}


# Fields that do not change what Inductor compiles: left out of cache keys and manifests.
NOT_COMPILED = ("report", "quiet", "strict", "require_manifest", "fleet", "fleet_timeout_s")
UNTAGGED = "<compiled outside any override block>"


@functools.lru_cache(maxsize=256)
def settings_key(settings: Settings | None) -> str:
    """The part of the settings that changes compiled code, as a stable text (the cache
    salt, manifests and fleet decisions are keyed by it)."""
    if settings is None:
        return UNTAGGED
    text = ";".join(f"{k}={v!r}" for k, v in sorted(settings.compiled().items()))
    return f"inductor_sm_override-{__version__}:{text}"


def env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    """The fields set by INDUCTOR_SM_OVERRIDE_* variables, parsed and validated.

    Unknown INDUCTOR_SM_OVERRIDE_* names (typos) are rejected too, so a misspelt
    variable never silently does nothing.
    """
    known = {env_name(field): field for field in _FIELDS}
    for name in env_variables(environ):
        if name != ENV_SWITCH and name not in known:
            raise SettingsError(
                f"{name} is not a known variable: expected one of {ENV_SWITCH}, "
                + ", ".join(known)
            )
    layer: dict[str, Any] = {}
    for name, field in known.items():
        raw = environ.get(name)
        if raw is None or raw.strip() == "":
            continue
        check = _FIELDS[field][0]
        parse = _ENV_PARSERS.get(check, _env_int)
        try:
            layer[field] = check(parse(raw))
        except (TypeError, ValueError):
            what = _BOOL_WORDS if check is _check_bool else _describe(check)
            raise SettingsError(f"{name}={raw!r} is not accepted: expected {what}") from None
    problem = report_path_problem(layer["report"]) if "report" in layer else None
    if problem:  # once, at start, not once per autotuned op
        raise SettingsError(f"{env_name('report')}={layer['report']!r} is not accepted: {problem}")
    return layer


def env_switch(environ: Mapping[str, str]) -> bool | None:
    """The master switch INDUCTOR_SM_OVERRIDE: True/False, or None when unset."""
    raw = environ.get(ENV_SWITCH)
    if raw is None or raw.strip() == "":
        return None
    try:
        return parse_bool_word(raw)
    except ValueError:
        raise SettingsError(
            f"{ENV_SWITCH}={raw!r} is not accepted: expected {_BOOL_WORDS}"
        ) from None


def env_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """All INDUCTOR_SM_OVERRIDE* variables that are set."""
    return {k: v for k, v in environ.items() if k.startswith(ENV_PREFIX)}


def _edits(a: str, b: str) -> int:
    """Levenshtein distance (short names)."""
    row = list(range(len(b) + 1))
    for i, char in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, other in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (char != other))
    return row[-1]


def near_misses(environ: Mapping[str, str]) -> dict[str, str]:
    """Set names that look like this package's variables but are not (another case, a
    letter or two off): name -> the variable probably meant. The same fragments arm the
    start-up hook (``_hook.PTH_LINE``)."""
    known = [ENV_SWITCH, *map(env_name, _FIELDS)]
    alike = [n for n in environ if not n.startswith(ENV_PREFIX)
             and any(f in n.upper().replace("_", "") for f in ("INDUCTORSM", "SMOVER"))]
    best = {n: min(known, key=lambda k: _edits(n.upper(), k)) for n in alike}
    return {n: meant for n, meant in best.items() if _edits(n.upper(), meant) <= 2}


def near_miss_line(environ: Mapping[str, str]) -> str | None:
    """One line naming every near miss, or None."""
    return "; ".join(f"{name} is not a variable of this package (ignored): did you mean "
                     f"{meant}?" for name, meant in near_misses(environ).items()) or None
