"""Exceptions of the public contract."""

from __future__ import annotations


class SettingsError(ValueError):
    """A setting (argument or environment variable) has a value that is not accepted."""


class UnsupportedTorchError(RuntimeError):
    """The running torch does not have the layout the override needs (raised with strict=True)."""
