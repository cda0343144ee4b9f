"""Layer 5: the public API (blocks, backend, checked compile, env layer, limit_sms)."""
