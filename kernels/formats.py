"""Packed weight formats that autoq's kernels read, with plain-torch pack/unpack as the reference.

Weight-only formats (W2, W3, W4, W8; W5 and W6 pack the same way), for a weight
``W`` of shape ``(N, K) = (out_features, in_features)`` as in ``nn.Linear``:

* ``qweight``: int32 ``(N, ceil(K / C))`` with ``C = 32 // bits`` codes per word
  (W2: 16, W3: 10, W4: 8, W5: 6, W6: 5, W8: 4). Code ``k`` of row ``n`` sits in word
  ``k // C`` at bits ``[(k % C) * bits, (k % C + 1) * bits)``, least significant first.
  W3/W5/W6 leave the top 2 bits of every word zero (30 of 32 bits used: codes never
  straddle words, so one load, one shift and one mask unpack a code). Columns past
  ``K`` in the last word are code 0. The words are stored as signed int32: bit 31 is
  the sign bit, so unpacking masks after shifting.
* ``scales``: fp16 ``(N, G)``, ``G = ceil(K / group_size)`` for group formats
  (group ``g`` covers columns ``[g * group_size, (g + 1) * group_size)``), ``G = 1``
  per output channel, and shape ``(1, 1)`` for a per-tensor scale.
* ``zeros``: fp16, same shape as ``scales``, integer-valued, for asymmetric formats;
  ``None`` for symmetric formats, whose zero point is ``2 ** (bits - 1)``.
* Dequantization is ``w = scale * (code - zero)`` in fp32: exactly
  :meth:`autoq.quant.QuantizedTensor.dequantize`.

W8A8 format (:class:`Int8Weight`): symmetric int8 weights ``(N, K)`` stored as
``code - 128`` (in ``[-128, 127]``; ``[-127, 127]`` unless a range was clipped) and fp16 scales ``(N,)`` per output channel
(or ``(1,)`` per tensor); activations are quantized per token at run time.

The packed form is what the kernels read, not the tightest storage: W3, W5 and W6
spend 32 bits on 30 bits of codes (+6.7%), see :func:`packed_nbytes`. The tight bit
stream of :func:`autoq.quant.pack_codes` is what ``QuantSpec.storage_bytes`` counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from autoq.errors import AutoqError
from autoq.quant.spec import QuantSpec
from autoq.quant.tensor import QuantizedTensor

PACKED_BITS = (2, 3, 4, 5, 6, 8)
KERNEL_BITS = (2, 3, 4, 8)  # the weight-only kernels are tested and benchmarked at these


def codes_per_word(bits: int) -> int:
    """How many ``bits``-bit codes one int32 word holds (``32 // bits``)."""
    if bits not in PACKED_BITS:
        raise AutoqError(f"no packed format for {bits}-bit codes; choose one of {PACKED_BITS}")
    return 32 // bits


PACK_ROWS_CODES = 1 << 22  # codes per step of packing: rows are packed in blocks of about this many (bounds the temporaries)


def _row_blocks(n: int, k: int) -> list[slice]:
    """The row blocks that (un)packing steps through: about ``PACK_ROWS_CODES`` codes each, one row at least."""
    step = max(1, PACK_ROWS_CODES // max(k, 1))
    return [slice(start, min(n, start + step)) for start in range(0, n, step)]


def pack_weight(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack unsigned codes ``(N, K)`` (values in ``[0, 2**bits)``) along K into int32 ``(N, ceil(K / C))``, in blocks of
    rows: the int64 temporaries are those of a block, not of the layer (25 bytes a code of a whole 8192 x 28672 layer)."""
    per_word = codes_per_word(bits)
    if codes.dim() != 2:
        raise AutoqError(f"codes must be 2-D (out_features, in_features), got shape {tuple(codes.shape)}")
    if codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise AutoqError(f"codes must be an integer tensor, got {codes.dtype}")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= 1 << bits):
        raise AutoqError(f"codes out of range for {bits}-bit packing: expected values in [0, {(1 << bits) - 1}]")
    n, k = codes.shape
    n_words = math.ceil(k / per_word)
    out = torch.empty(n, n_words, dtype=torch.int32, device=codes.device)
    shifts = torch.arange(per_word, dtype=torch.int64, device=codes.device) * bits
    for rows in _row_blocks(n, k):
        block = codes[rows]
        padded = torch.zeros(block.shape[0], n_words * per_word, dtype=torch.int64, device=codes.device)
        padded[:, :k] = block
        words = (padded.reshape(block.shape[0], n_words, per_word) << shifts).sum(dim=-1)
        out[rows] = torch.where(words >= 1 << 31, words - (1 << 32), words).to(torch.int32)  # two's complement
    return out


def unpack_weight(qweight: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    """Inverse of :func:`pack_weight`: the first ``k`` codes of every row as uint8 ``(N, k)`` (in blocks of rows)."""
    per_word = codes_per_word(bits)
    if qweight.dim() != 2 or qweight.dtype != torch.int32:
        raise AutoqError(f"packed weights must be a 2-D int32 tensor, got {qweight.dtype} of shape {tuple(qweight.shape)}")
    if qweight.shape[1] * per_word < k:
        raise AutoqError(f"{k} columns of {bits}-bit codes take {-(-k // per_word)} words a row ({per_word} codes a word); got {qweight.shape[1]}")
    n = qweight.shape[0]
    out = torch.empty(n, k, dtype=torch.uint8, device=qweight.device)
    shifts = torch.arange(per_word, dtype=torch.int64, device=qweight.device) * bits
    for rows in _row_blocks(n, k):
        words = qweight[rows].to(torch.int64) & 0xFFFFFFFF
        codes = (words[:, :, None] >> shifts) & ((1 << bits) - 1)
        out[rows] = codes.reshape(words.shape[0], -1)[:, :k].to(torch.uint8)
    return out


def packed_nbytes(spec: QuantSpec, out_features: int, in_features: int) -> int:
    """Bytes of the kernel layout of a weight ``(out, in)``: int32 words plus fp16 scales and zeros."""
    if spec.is_half:
        return out_features * in_features * 2
    params = 2 * (1 if spec.symmetric else 2)
    n_groups = spec.n_param_groups(out_features, in_features)
    return out_features * math.ceil(in_features / codes_per_word(spec.bits)) * 4 + n_groups * params


def _params_shape(spec: QuantSpec, n: int, k: int) -> tuple[int, int]:
    """The kernel's ``(N, G)`` of per-group parameters: ``(1, 1)`` per tensor, ``(N, 1)`` per channel."""
    if spec.granularity == "tensor":
        return (1, 1)
    if spec.granularity == "channel":
        return (n, 1)
    assert spec.group_size is not None
    return (n, math.ceil(k / spec.group_size))


def _params_2d(values: torch.Tensor, spec: QuantSpec, n: int, k: int) -> torch.Tensor:
    """QuantizedTensor's flat per-group parameters as the kernel's ``(N, G)`` (``(1, 1)`` per tensor)."""
    return values.reshape(_params_shape(spec, n, k)).half().contiguous()


def kernel_params(qt: QuantizedTensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A :class:`QuantizedTensor`'s fp16 scales and zero points (``None`` when symmetric) as the kernels read them."""
    n, k = qt.shape
    return _params_2d(qt.scale, qt.spec, n, k), None if qt.spec.symmetric else _params_2d(qt.zero, qt.spec, n, k)


def split_counters(n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``n`` zeroed int32 counters for the weight-only kernels' launches split over K (one a tile). A layer keeps one per
    output: enough for the GEMV at batch 1 and the GEMM's 16-row tiles up to batch 16."""
    return torch.zeros(n, dtype=torch.int32, device=device)


@dataclass(frozen=True)
class PackedWeight:
    """One weight in the weight-only kernel layout (see the module docstring)."""

    spec: QuantSpec
    shape: tuple[int, int]  # (N, K) = (out_features, in_features)
    qweight: torch.Tensor  # int32 (N, ceil(K / C))
    scales: torch.Tensor  # fp16 (N, G) or (1, 1)
    zeros: torch.Tensor | None  # fp16 like scales; None when symmetric
    # Scratch of the kernels' launches split over K, not data: int32 zeros, one per output (autoq.kernels.splits). Each
    # launch leaves them zero. Without them a split launch zeroes its own (a memset more); not in nbytes.
    counters: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n, k = self.shape
        if self.spec.is_half or self.spec.bits not in PACKED_BITS:
            raise AutoqError(f"{self.spec.name} has no weight-only packed format; packed bits are {PACKED_BITS}")
        if tuple(self.qweight.shape) != (n, math.ceil(k / self.codes_per_word)) or self.qweight.dtype != torch.int32:
            raise AutoqError(f"qweight of {self.spec.name} for shape {self.shape} must be int32 {(n, math.ceil(k / self.codes_per_word))}, "
                             f"got {self.qweight.dtype} {tuple(self.qweight.shape)}")
        expected = _params_shape(self.spec, n, k)  # arithmetic: a QuantLinear builds one in every forward
        if tuple(self.scales.shape) != expected or (self.zeros is not None and tuple(self.zeros.shape) != expected):
            raise AutoqError(f"scales/zeros of {self.spec.name} for shape {self.shape} must have shape {expected}")
        if (self.zeros is None) != self.spec.symmetric:
            raise AutoqError(f"{self.spec.name}: zeros must be {'None' if self.spec.symmetric else 'given'}")

    @property
    def bits(self) -> int:
        return self.spec.bits

    @property
    def codes_per_word(self) -> int:
        return codes_per_word(self.spec.bits)

    @property
    def group_size(self) -> int:
        """Columns per scale: the group size, or 0 when one scale covers a whole row (channel, tensor)."""
        return self.spec.group_size or 0

    @property
    def nbytes(self) -> int:
        zeros = 0 if self.zeros is None else self.zeros.numel() * 2
        return self.qweight.numel() * 4 + self.scales.numel() * 2 + zeros

    @classmethod
    def from_quantized(cls, qt: QuantizedTensor) -> PackedWeight:
        """Pack a :class:`QuantizedTensor` (codes, flat per-group scale/zero) into the kernel layout."""
        n, k = qt.shape
        scales, zeros = kernel_params(qt)
        qweight = pack_weight(qt.codes, qt.spec.bits)
        return cls(qt.spec, (n, k), qweight, scales, zeros, split_counters(n, qweight.device))

    @classmethod
    def empty(cls, spec: QuantSpec, shape: tuple[int, int], device: torch.device | str = "meta") -> PackedWeight:
        """An uninitialized weight in this layout: what compiling a kernel for the shape needs, without data."""
        n, k = shape
        groups = spec.n_param_groups(n, k)
        params = _params_2d(torch.empty(groups, device=device), spec, n, k)
        qweight = torch.empty(n, math.ceil(k / codes_per_word(spec.bits)), dtype=torch.int32, device=device)
        return cls(spec, (n, k), qweight, params, None if spec.symmetric else torch.empty_like(params), split_counters(n, device))

    def codes(self) -> torch.Tensor:
        """Unpacked uint8 codes ``(N, K)``."""
        return unpack_weight(self.qweight, self.bits, self.shape[1])

    def param_columns(self, values: torch.Tensor) -> torch.Tensor:
        """Expand a ``(N, G)`` parameter to one value per weight ``(N, K)``."""
        n, k = self.shape
        if self.group_size:
            values = values.repeat_interleave(self.group_size, dim=1)[:, :k]
        return values.expand(n, k)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Reference dequantization ``scale * (code - zero)`` (computed in fp32 or wider)."""
        compute = torch.float64 if dtype == torch.float64 else torch.float32
        zero = self.zeros.to(compute) if self.zeros is not None else torch.full_like(self.scales, 1 << (self.bits - 1), dtype=compute)
        w = self.param_columns(self.scales.to(compute)) * (self.codes().to(compute) - self.param_columns(zero))
        return w.to(dtype)

    def to(self, device: torch.device | str, copy: bool = False) -> PackedWeight:
        """On ``device``; with ``copy``, in new memory even if already there (as ``Tensor.to``)."""
        zeros = None if self.zeros is None else self.zeros.to(device, copy=copy)
        counters = None if self.counters is None else self.counters.to(device, copy=copy)
        return PackedWeight(self.spec, self.shape, self.qweight.to(device, copy=copy), self.scales.to(device, copy=copy), zeros, counters)


@dataclass(frozen=True)
class Int8Weight:
    """Symmetric int8 weight ``(N, K)`` for the W8A8 kernel, with fp16 scales per output channel or per tensor."""

    spec: QuantSpec
    qweight: torch.Tensor  # int8 (N, K): code - 128
    scales: torch.Tensor  # fp16 (N,) or (1,)

    def __post_init__(self) -> None:
        if not supports_w8a8(self.spec):
            raise AutoqError(f"W8A8 needs a symmetric 8-bit per-channel or per-tensor weight, got {self.spec.name}")
        if self.qweight.dim() != 2 or self.qweight.dtype != torch.int8:
            raise AutoqError(f"W8A8 weights must be a 2-D int8 tensor, got {self.qweight.dtype} {tuple(self.qweight.shape)}")
        expected = (1,) if self.spec.granularity == "tensor" else (self.qweight.shape[0],)
        if tuple(self.scales.shape) != expected:
            raise AutoqError(f"W8A8 scales must have shape {expected}, got {tuple(self.scales.shape)}")

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.qweight.shape)  # type: ignore[return-value]

    @property
    def nbytes(self) -> int:
        return self.qweight.numel() + self.scales.numel() * 2

    @classmethod
    def from_quantized(cls, qt: QuantizedTensor) -> Int8Weight:
        return cls.from_codes(qt.spec, qt.codes, qt.scale)

    @classmethod
    def from_codes(cls, spec: QuantSpec, codes: torch.Tensor, scales: torch.Tensor) -> Int8Weight:
        """From unsigned codes in [0, 255] (zero point 128) and their scales, in any shape holding N or 1 values."""
        if not supports_w8a8(spec):
            raise AutoqError(f"W8A8 needs a symmetric 8-bit per-channel or per-tensor weight, got {spec.name}")
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:  # 0.7 and 1.9 became -128 and -127
            raise AutoqError(f"W8A8 codes must be integers in [0, 255], got dtype {codes.dtype}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) > 255):  # 256 and 300 wrapped to -128 and -84
            raise AutoqError(f"W8A8 codes must be in [0, 255] (zero point 128), got {int(codes.min())} to {int(codes.max())}")
        values = (codes.to(torch.int16) - 128).to(torch.int8)
        return cls(spec, values.contiguous(), scales.reshape(-1).half().contiguous())

    @classmethod
    def empty(cls, spec: QuantSpec, shape: tuple[int, int], device: torch.device | str = "meta") -> Int8Weight:
        """An uninitialized weight in this layout (see :meth:`PackedWeight.empty`)."""
        scales = torch.empty(1 if spec.granularity == "tensor" else shape[0], dtype=torch.float16, device=device)
        return cls(spec, torch.empty(shape, dtype=torch.int8, device=device), scales)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        compute = torch.float64 if dtype == torch.float64 else torch.float32
        scales = self.scales.to(compute).reshape(-1, 1)
        return (scales * self.qweight.to(compute)).to(dtype)

    def to(self, device: torch.device | str, copy: bool = False) -> Int8Weight:
        """On ``device``; with ``copy``, in new memory even if already there (as ``Tensor.to``)."""
        return Int8Weight(self.spec, self.qweight.to(device, copy=copy), self.scales.to(device, copy=copy))


def supports_weight_only(spec: QuantSpec) -> bool:
    """Whether the weight-only kernels read ``spec`` (every integer format with a packed layout)."""
    return not spec.is_half and spec.bits in PACKED_BITS


def supports_w8a8(spec: QuantSpec) -> bool:
    """Whether the W8A8 kernel reads ``spec``: 8 bits, symmetric, per channel or per tensor."""
    return spec.bits == 8 and spec.symmetric and spec.granularity in ("channel", "tensor")
