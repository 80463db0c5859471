"""Model handling: quantizable layers and their weights viewed as (out, in)."""

from autoq.model.layers import (
    LINEAR_KINDS,
    NOT_REACHED,
    LayerInfo,
    channels_first,
    check_finite_stored,
    check_finite_weights,
    check_has_values,
    check_untied,
    compile_patterns,
    compiled_inside,
    find_layers,
    get_module,
    layout_2d,
    left_out_note,
    mark_unreached,
    meta_tensor,
    name_examples,
    readable_float,
    searched_tied,
    skipped_names,
    tied_note,
    tied_weights,
    to_native,
    uncompiled,
    unreached_note,
    weight_2d,
)

__all__ = ["LINEAR_KINDS", "NOT_REACHED", "LayerInfo", "channels_first", "check_finite_stored", "check_finite_weights", "check_has_values", "check_untied", "compile_patterns", "compiled_inside", "find_layers", "get_module", "layout_2d", "left_out_note", "mark_unreached", "meta_tensor", "name_examples", "readable_float", "searched_tied", "skipped_names", "tied_note", "tied_weights", "to_native", "uncompiled", "unreached_note", "weight_2d"]
