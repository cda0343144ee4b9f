"""Layer 3: one module per patched Inductor site, each ``build_patches(plan)``."""
