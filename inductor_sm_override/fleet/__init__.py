"""Layer 3: fleet: the ranks of a job share verified autotune decisions."""
