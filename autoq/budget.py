"""Budgets: ``4.5bits``, ``4.5``, ``20MB``, ``20MiB``, ``3ms`` parsed into one type.

Bits and sizes are checked against the feasible range of the search space (its
cheapest and dearest assignment). Latency budgets are recognised but refused
until measured kernel tables exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from autoq.cost import Cost
from autoq.errors import AutoqError

_UNITS = {
    "": ("bits", 1.0),
    "bit": ("bits", 1.0),
    "bits": ("bits", 1.0),
    "kb": ("bytes", 1e3),
    "mb": ("bytes", 1e6),
    "gb": ("bytes", 1e9),
    "kib": ("bytes", 2.0**10),
    "mib": ("bytes", 2.0**20),
    "gib": ("bytes", 2.0**30),
    "us": ("latency_ms", 1e-3),
    "ms": ("latency_ms", 1.0),
    "s": ("latency_ms", 1e3),
}
_BUDGET_RE = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)
_EXAMPLES = "e.g. '4.5bits', '4.5', '20MB', '20MiB'"


@dataclass(frozen=True)
class Budget:
    """A limit on one cost: ``kind`` is ``bits`` (per weight), ``bytes`` or ``latency_ms``."""

    kind: str
    value: float
    text: str

    def measure(self, cost: Cost) -> float:
        """The cost the budget limits, in the budget's own unit."""
        if self.kind == "bits":
            return cost.effective_bits
        if self.kind == "bytes":
            return float(cost.size_bytes)
        raise AutoqError("latency budgets are not supported yet")

    def violation(self, cost: Cost) -> float:
        """``measure - value``: <= 0 means within budget (Optuna's constraint convention)."""
        return self.measure(cost) - self.value

    def fmt(self, amount: float) -> str:
        if self.kind == "bits":
            return f"{amount:.3f} bits"
        return f"{amount / 1e6:.3f} MB"

    def check_feasible(self, cheapest: Cost, dearest: Cost) -> None:
        """Refuse a budget that no assignment meets, or that every assignment meets."""
        lo, hi = self.measure(cheapest), self.measure(dearest)
        span = f"the feasible range for this model and search space is {self.fmt(lo)} to {self.fmt(hi)}"
        if self.value < lo:
            raise AutoqError(f"budget {self.text!r} is below the cheapest assignment; {span}")
        if self.value > hi:
            raise AutoqError(f"budget {self.text!r} is above the dearest assignment, so there is nothing to search; {span}")


def parse_budget(text: str | float | Budget) -> Budget:
    """Parse a budget string; a bare number means bits per weight."""
    if isinstance(text, Budget):
        return text
    raw = str(text)
    match = _BUDGET_RE.match(raw)
    if not match or match.group(2).lower() not in _UNITS:
        raise AutoqError(f"cannot parse budget {raw!r}; expected a positive number with a unit, {_EXAMPLES}, or a latency like '3ms'")
    number, unit = float(match.group(1)), match.group(2).lower()
    kind, scale = _UNITS[unit]
    if not number > 0:
        raise AutoqError(f"budget {raw!r} must be positive, {_EXAMPLES}")
    if kind == "latency_ms":
        raise AutoqError(
            f"latency budget {raw!r} needs measured kernel latency tables, which this version does not have yet; "
            f"use a bits or size budget, {_EXAMPLES}"
        )
    return Budget(kind, number * scale, raw)
