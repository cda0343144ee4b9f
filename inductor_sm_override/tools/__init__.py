"""Layer 6: tools (CLI, doctor, demo, report table and plot, quiet, launcher)."""
