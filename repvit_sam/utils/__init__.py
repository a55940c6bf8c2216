"""Pre/post-processing helpers (no network modules)."""
