"""Triton kernels for the formats autoq searches (``autoq.kernels``); Triton is imported lazily.

* :mod:`~autoq.kernels.formats`: the packed layouts (``PackedWeight`` for weight-only
  W2-W8, ``Int8Weight`` for W8A8) and their plain-torch pack/unpack reference.
* :mod:`~autoq.kernels.ops`: ``wq_linear(x, packed)`` and ``w8a8_linear(x, weight)``:
  Triton on CUDA (or under ``TRITON_INTERPRET=1`` when asked), torch elsewhere.
* :mod:`~autoq.kernels.registry`: kernel name -> (formats it reads, how to pack, how to run).
* :mod:`~autoq.kernels.table`: ``LatencyTable``, the JSON latency table the cost model reads.
* :mod:`~autoq.kernels.bench`: measures the registry's kernels into a ``LatencyTable`` (GPU only),
  recording each autotuner's chosen tile (:mod:`~autoq.kernels.autotune_log`).
* :mod:`~autoq.kernels.precompile`: compiles what launches would, for a named GPU target and without
  one, in parallel before a benchmark, or in process for :mod:`~autoq.kernels.compile_check`, which
  reads the machine code (:mod:`~autoq.kernels.sass`).

Importing this package never imports Triton; only running a Triton kernel does.
"""

from autoq.kernels.formats import (
    Int8Weight,
    PackedWeight,
    codes_per_word,
    pack_weight,
    packed_nbytes,
    supports_w8a8,
    supports_weight_only,
    unpack_weight,
)
from autoq.kernels.table import LatencyRow, LatencyTable

__all__ = [
    "Int8Weight",
    "LatencyRow",
    "LatencyTable",
    "PackedWeight",
    "codes_per_word",
    "pack_weight",
    "packed_nbytes",
    "supports_w8a8",
    "supports_weight_only",
    "unpack_weight",
]
