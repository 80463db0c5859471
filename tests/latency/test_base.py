"""How a latency is written: microseconds below a millisecond, milliseconds from one."""

from __future__ import annotations

import pytest

from autoq.latency import format_latency_us


@pytest.mark.parametrize(
    ("us", "said"),
    [(152.3, "152.300 us"), (999.9994, "999.999 us"), (999.9996, "1.0000 ms"), (1000.0, "1.0000 ms"), (3141.59, "3.1416 ms"), (12345.0, "12.3450 ms")],
)
def test_a_latency_is_in_microseconds_below_a_millisecond_and_in_milliseconds_from_one(us: float, said: str) -> None:
    """Three decimals of a microsecond, four of a millisecond; a value that rounds to 1000 us is said as 1 ms."""
    assert format_latency_us(us) == said
