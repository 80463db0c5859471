"""How a tensor outside the quantized weights is stored: fp16, unless fp16 cannot hold it.

The export writes every other parameter and persistent buffer so and the cost model counts it so: one rule for both,
so a size budget is the file's tensor bytes, whatever dtypes the model holds.
"""

from __future__ import annotations

import torch


def stored_dtype(tensor: torch.Tensor) -> torch.dtype:
    """fp16 for a floating-point tensor, unless that overflows a finite value (a BatchNorm's running variance above
    65504) or loses the tensor to underflow (values below fp16's normal range, 6e-5, keep few bits, and below 6e-8
    none: an epsilon-like parameter read 0): then its own dtype. A few tiny values in a large tensor (an embedding's)
    do not count: only a tensor fp16 holds worse than its usual relative precision as a whole keeps its dtype.
    An integer tensor keeps its dtype."""
    if not tensor.is_floating_point() or tensor.dtype == torch.float16:
        return tensor.dtype
    half = tensor.detach().half()
    if not torch.isfinite(half).all() and torch.isfinite(tensor).all():
        return tensor.dtype
    full = tensor.detach().float()
    if float((half.float() - full).norm()) > 1e-3 * float(full.norm()):
        return tensor.dtype
    return torch.float16


def stored_nbytes(tensor: torch.Tensor) -> int:
    """The bytes `stored_dtype` gives the tensor in a file."""
    return tensor.numel() * torch.empty((), dtype=stored_dtype(tensor)).element_size()
