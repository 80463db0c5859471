"""Per-layer sensitivity metrics (``autoq.sensitivity``): one registry, each metric a table over (layer, option).

Metrics: ``hessian`` (Hutchinson trace, HAWQ-V2), ``fisher`` (diagonal Fisher),
and the forward-only ``kl``, ``sqnr`` and ``mse`` of the model output with one
layer quantized at a time. ``workload_table`` computes (or loads from the on-disk
cache) a `SensitivityTable`; the search turns it into seeds (``autoq.engine.ilp``).
"""

from autoq.fingerprints import data_fingerprint, model_hash
from autoq.sensitivity import forward, gradient  # noqa: F401  (registers the metrics)
from autoq.sensitivity.compute import cache_path, compute_table, workload_table
from autoq.sensitivity.inputs import Inputs
from autoq.sensitivity.registry import MetricOutput, get_metric, metric_names, register_metric
from autoq.sensitivity.table import Entry, SensitivityTable

__all__ = [
    "Entry", "Inputs", "MetricOutput", "SensitivityTable", "cache_path", "compute_table", "data_fingerprint",
    "get_metric", "metric_names", "model_hash", "register_metric", "workload_table",
]
