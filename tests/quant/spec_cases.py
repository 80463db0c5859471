"""Every integer `QuantSpec`, shared by the quantization tests."""

from __future__ import annotations

import itertools

from autoq.quant import QuantSpec
from autoq.quant.spec import GROUP_SIZES

INT_BITS = (2, 3, 4, 5, 6, 8)
GROUPS = GROUP_SIZES


def all_int_specs(bits_list: tuple[int, ...] = INT_BITS) -> list[QuantSpec]:
    specs = []
    for bits, sym in itertools.product(bits_list, (False, True)):
        specs.append(QuantSpec(bits, "tensor", None, sym))
        specs.append(QuantSpec(bits, "channel", None, sym))
        for g in GROUPS:
            specs.append(QuantSpec(bits, "group", g, sym))
    return specs
