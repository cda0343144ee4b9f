"""Shared autotune decisions (placeholder while the fleet is rebuilt)."""

from __future__ import annotations

from typing import Any


def fleet_events() -> list[dict[str, Any]]:
    """The 'fleet' events of this process (oldest first)."""
    return []


def build_patches(plan: Any) -> list[Any]:
    return []
