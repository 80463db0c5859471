"""Applying assignments and measuring quality."""

from autoq.evaluate.cache import QuantCache, apply_assignment, quantize_layer
from autoq.evaluate.fidelity import (
    OutputFidelity,
    call_model,
    check_finite_batches,
    mean_pooled,
    primary_output,
)

__all__ = ["OutputFidelity", "QuantCache", "apply_assignment", "call_model", "check_finite_batches", "mean_pooled", "primary_output", "quantize_layer"]
