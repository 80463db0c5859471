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

CHUNK = 1 << 22  # codes per step (a multiple of 8: each step's bits fill whole bytes): bounds the temporaries


def pack_codes(codes: torch.Tensor, bits: int, chunk: int = CHUNK) -> torch.Tensor:
    """Pack unsigned codes (any shape, values in [0, 2**bits)) into a flat uint8 tensor.

    In steps of ``chunk`` codes (a multiple of 8) with uint8 temporaries: 4 bytes of working memory per code of a
    16M-code layer, where int64 bit matrices of the whole tensor took 27-53 (``benchmarks/pack_memory.py``)."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    if chunk <= 0 or chunk % 8:
        raise ValueError(f"chunk must be a positive multiple of 8 codes, got {chunk}")
    if codes.dtype.is_floating_point or codes.dtype == torch.bool:  # 1.7 was packed as 1
        raise ValueError(f"codes must be an integer tensor, got {codes.dtype}")
    flat = codes.reshape(-1)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= (1 << bits)):
        raise ValueError(f"codes out of range for {bits}-bit packing")
    flat = flat.to(torch.uint8).cpu().numpy()
    out = np.empty((flat.size * bits + 7) // 8, dtype=np.uint8)
    for start in range(0, flat.size, chunk):
        part = flat[start : start + chunk]
        bit_matrix = np.unpackbits(part[:, None], axis=1, bitorder="little")[:, :bits]  # (n, bits), LSB first
        packed = np.packbits(bit_matrix.reshape(-1), bitorder="little")
        out[start * bits // 8 : start * bits // 8 + packed.size] = packed
    return torch.from_numpy(out)


def unpack_codes(packed: torch.Tensor, bits: int, count: int, chunk: int = CHUNK) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: the first ``count`` codes as a flat uint8 tensor (in steps, as it packs)."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    needed = (count * bits + 7) // 8
    data = packed.reshape(-1).cpu().numpy().astype(np.uint8, copy=False)
    if data.size < needed:
        raise ValueError(f"{count} codes of {bits} bits need {needed} bytes, got {data.size}")
    if chunk <= 0 or chunk % 8:
        raise ValueError(f"chunk must be a positive multiple of 8 codes, got {chunk}")
    codes = np.empty(count, dtype=np.uint8)
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        first = start * bits // 8
        stream = np.unpackbits(data[first : first + (n * bits + 7) // 8], bitorder="little")[: n * bits]
        codes[start : start + n] = np.packbits(stream.reshape(n, bits), axis=1, bitorder="little")[:, 0]  # pads each row to 8 bits
    return torch.from_numpy(codes)
