"""Layer 0: settings, state, records, events, patching. Imports no torch and nothing above."""

__version__ = "0.1.0"  # the package version (pyproject.toml says the same)
