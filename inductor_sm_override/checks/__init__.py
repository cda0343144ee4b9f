"""Layer 2: the checks (compare, tolerances, check inputs, references, manifests, outputs)."""
