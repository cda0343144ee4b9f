"""Layer 1: the per-release torch plan (sites, hooks present, config layout, hardware)."""
