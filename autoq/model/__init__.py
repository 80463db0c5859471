"""Model handling: quantizable layers, weight views, loading from disk."""

from autoq.model.layers import (
    LayerInfo,
    check_finite_weights,
    find_layers,
    get_module,
    to_native,
    weight_2d,
)

__all__ = ["LayerInfo", "check_finite_weights", "find_layers", "get_module", "to_native", "weight_2d"]
