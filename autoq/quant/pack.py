"""Pack b-bit integer codes into bytes and back.

The storage format is a little-endian bit stream: code ``i`` occupies bits
``[i*b, (i+1)*b)`` of the stream, least significant bit first; the last byte is
zero-padded. It is exact for every ``b`` in 1..8 and is what the size accounting
counts (``ceil(n*b/8)`` bytes). Kernel-friendly layouts (int32 words along K)
are derived from the unpacked codes by the kernels package.
"""

from __future__ import annotations

import numpy as np
import torch


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack unsigned codes (any shape, values in [0, 2**bits)) into a flat uint8 tensor."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    flat = codes.reshape(-1).to(torch.int64).cpu().numpy()
    if flat.size and (flat.min() < 0 or flat.max() >= (1 << bits)):
        raise ValueError(f"codes out of range for {bits}-bit packing")
    shifts = np.arange(bits, dtype=np.int64)
    bit_matrix = ((flat[:, None] >> shifts) & 1).astype(np.uint8)
    packed = np.packbits(bit_matrix.reshape(-1), bitorder="little")
    return torch.from_numpy(packed)


def unpack_codes(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: the first ``count`` codes as a flat uint8 tensor."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    needed = (count * bits + 7) // 8
    data = packed.reshape(-1).cpu().numpy().astype(np.uint8)
    if data.size < needed:
        raise ValueError(f"{count} codes of {bits} bits need {needed} bytes, got {data.size}")
    bit_stream = np.unpackbits(data[:needed], bitorder="little")[: count * bits]
    weights = (1 << np.arange(bits, dtype=np.int64))
    codes = bit_stream.reshape(count, bits).astype(np.int64) @ weights
    return torch.from_numpy(codes.astype(np.uint8))
