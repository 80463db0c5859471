"""Per-layer sensitivity metrics (``autoq.sensitivity``): one registry, each metric a table over (layer, option)."""
