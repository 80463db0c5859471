"""What the cost model asks of a latency source: microseconds per layer, and a label."""

from __future__ import annotations

from typing import Protocol

from autoq.quant import QuantSpec


class LatencyModel(Protocol):
    """Per-layer latency of ``y = x @ W^T`` with ``W`` of shape ``(out, in)`` stored as ``spec``.

    ``batch`` is the number of rows of ``x`` (tokens). ``source`` is
    ``table:<device>`` for a measured table or ``estimate:roofline:<device>``
    for a roofline estimate, and goes with every latency autoq reports.
    """

    batch: int
    note: str  # a line a search prints about this source ("" when there is nothing to say)

    @property
    def source(self) -> str: ...

    @property
    def is_estimate(self) -> bool: ...

    def layer_us(self, out_features: int, in_features: int, spec: QuantSpec, int8_activations: bool = False) -> float:
        """``int8_activations``: the layer quantizes its input to int8 too and runs the W8A8 kernel."""
        ...


def format_latency_us(us: float) -> str:
    """``152.300 us`` below a millisecond, ``3.1416 ms`` from one: enough digits to tell formats apart. The unit is
    chosen on the rounded value, so 999.9996 us is ``1.0000 ms``, not ``1000.000 us``."""
    return f"{us:.3f} us" if round(us, 3) < 1e3 else f"{us / 1e3:.4f} ms"
