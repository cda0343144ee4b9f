"""Layer 2: search policy (ranking model, shared-memory estimate)."""
