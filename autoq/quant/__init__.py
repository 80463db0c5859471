"""Integer weight formats: specs, quantize/dequantize, range setting, packing."""

from autoq.quant.pack import pack_codes, unpack_codes
from autoq.quant.ranges import lp_search_range, minmax_range
from autoq.quant.spec import QuantSpec
from autoq.quant.tensor import QuantizedTensor, fake_quantize, quantize

__all__ = [
    "QuantSpec",
    "QuantizedTensor",
    "fake_quantize",
    "lp_search_range",
    "minmax_range",
    "pack_codes",
    "quantize",
    "unpack_codes",
]
