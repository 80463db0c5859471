"""Budgets: ``4.5bits``, ``4.5``, ``20MB``, ``20MiB``, ``3ms``, ``250us`` parsed into one type.

Every budget is checked against the feasible range of the search space (its
cheapest and dearest assignment): one below the cheapest is refused, one above the
dearest is accepted with a note, since every assignment meets it ("3 ms" for a model
whose slowest assignment takes 0.3 ms is a real request, not a typo). A latency budget needs a latency source
(``--device h100`` for a roofline estimate, ``--device h200`` or ``--device TABLE.json`` for a
measured kernel table); without one it is refused with a message saying so.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from decimal import Decimal

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
    "\u00b5s": ("latency_ms", 1e-3),  # micro sign
    "\u03bcs": ("latency_ms", 1e-3),  # Greek mu
    "ms": ("latency_ms", 1.0),
    "s": ("latency_ms", 1e3),
}
# each character has one place to go: '[0-9]+\.?[0-9]*' and '\s*' on both sides of an empty unit backtracked over every
# split of a long text (20,000 digits took 16 s to refuse). Letters in both cases by name, not by re.IGNORECASE: with it
# '[a-z]' matched the Kelvin sign, read as 'k', and '20\u212ab' (20 Kb as it looks) passed as 20 kB
_BUDGET_RE = re.compile(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z\u00b5\u03bc]*)")
_SIZE_UNITS = {"kb": "kB", "mb": "MB", "gb": "GB", "kib": "KiB", "mib": "MiB", "gib": "GiB"}  # as typed (any case): as shown
# the units Budget.fmt writes, in bits, bytes or ms
_SHOWN = {"bits": 1.0, **{shown: _UNITS[typed][1] for typed, shown in _SIZE_UNITS.items()}, "us": 1e-3, "ms": 1.0, "s": 1e3}
_LATENCY_SHOWN = {"us": "us", "\u00b5s": "us", "\u03bcs": "us", "ms": "ms", "s": "s"}  # a latency's unit as typed: as shown
_LATENCY_DIGITS = {"us": 3, "ms": 6, "s": 9}  # decimals to the nanosecond in each
_EXAMPLES = "e.g. '4.5bits', '4.5', '20MB', '20MiB'"
_LATENCY_EXAMPLES = "e.g. '3ms', '250us', '0.003s'"
NEEDS_DEVICE = (
    "a latency budget needs a device to estimate latency on: pass --device h100 (or another preset: roofline estimate) "
    "or --device TABLE.json (a table measured by 'autoq kernels bench'); in Python, device='h100'"
)


BUDGET_KINDS = ("bits", "bytes", "latency_ms")
DEFAULT_BUDGET = "4.5bits"  # a search's, where none is given


@dataclass(frozen=True)
class Budget:
    """A limit on one cost: ``kind`` is ``bits`` (per weight), ``bytes`` or ``latency_ms``."""

    kind: str
    value: float
    text: str = ""  # as typed ('20MB'); left out, made from kind and value

    def __post_init__(self) -> None:
        """Refuse what parse_budget never makes: ``Budget('MB', 20, ...)`` was searched as a latency in ms, unsaid; and a
        text that does not state the same budget, which a stored search reads back (``Budget('bits', 4.5, '20MB')``
        came back from MLflow as 20 MB, and '30000 bytes' as nothing: its resume and ``autoq pareto`` failed)."""
        if self.kind not in BUDGET_KINDS:
            raise AutoqError(f"a Budget's kind is one of {', '.join(BUDGET_KINDS)}, got {self.kind!r}; or pass the budget as text "
                             f"(budget='20MB'), {_EXAMPLES}, '3ms'")
        value = self.value
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
            raise AutoqError(f"a Budget's value is a positive finite number (of {self.kind}), got {value!r}")
        object.__setattr__(self, "value", float(value))  # numpy's too: limit_us reads its repr, np.float64(3.0) in numpy 2
        if not isinstance(self.text, str):
            raise AutoqError(f"a Budget's text is how it is shown (a str such as '20MB'), got {type(self.text).__name__} {self.text!r}")
        if not self.text:
            object.__setattr__(self, "text", _as_text(self.kind, self.value))
            return
        try:
            kind, value = _parse(self.text)
        except AutoqError as exc:
            kind, value, why = None, None, str(exc)
        # a float32 value (np.float32(4.1)) is its text's to float32 precision
        if kind != self.kind or not math.isclose(value, self.value, rel_tol=1e-6):
            said = f"states {value!r} {kind}, not {self.value!r} {self.kind}" if kind else f"does not parse ({why})"
            raise AutoqError(f"a Budget's text is the budget as typed, which a stored search reads back: {self.text!r} {said}; "
                             f"write it as {_as_text(self.kind, self.value)!r}, or leave text out")

    def measure(self, cost: Cost) -> float:
        """The cost the budget limits, in the budget's own unit."""
        if self.kind == "bits":
            return cost.effective_bits
        if self.kind == "bytes":
            return float(cost.size_bytes)
        return self._latency_us(cost) / 1e3

    def _latency_us(self, cost: Cost) -> float:
        if cost.latency_us is None:
            raise AutoqError(f"cannot check latency budget {self.text!r}: {NEEDS_DEVICE}")
        return cost.latency_us

    def violation(self, cost: Cost) -> float:
        """``measure - value``: <= 0 means within budget (Optuna's constraint convention). A latency is compared in
        microseconds, the unit a cost adds up in: 4.2 us / 1e3 and the 0.0042 ms '4.2us' names differ in their last
        bit, and a budget equal to the cheapest assignment was refused as below it."""
        if self.kind != "latency_ms":
            return self.measure(cost) - self.value
        return (self._latency_us(cost) - self.limit_us) / 1e3

    @property
    def limit_us(self) -> float:
        """A latency budget in microseconds, from the decimal it was typed as ('12.002884179104477us': that float, as a
        point's latency_us prints), else from the decimal its milliseconds spell (``0.0042`` ms: 4.2 us exactly as a float,
        as a table's 4.2 us). Through the float in ms, a typed point's latency could come back an ulp below it, refused."""
        match = _split(self.text)
        unit = _UNITS.get(match[1].lower()) if match else None
        if unit is not None and unit[0] == "latency_ms":
            return float(Decimal(match[0]) * Decimal(repr(unit[1])) * 1000)
        return float(Decimal(repr(self.value)) * 1000)

    def fmt(self, amount: float) -> str:
        if self.kind == "bits":
            return f"{amount:.3f} bits"
        if self.kind == "latency_ms":  # in the unit typed too, to the nanosecond: 0.005ms's range in ms, not us
            unit = _LATENCY_SHOWN.get(_typed_unit(self.text), "ms")
            return f"{_trimmed(f'{amount / _SHOWN[unit]:.{_LATENCY_DIGITS[unit]}f}')} {unit}"
        unit = _SIZE_UNITS.get(_typed_unit(self.text), "MB")  # in the unit typed: 50MiB's range in MiB, 500kB's in kB
        mb = amount / _SHOWN[unit]
        return f"{mb:.3f} {unit}" if mb >= 1 else f"{mb:.4g} {unit}"  # 9,800 bytes is 0.0098 MB, not 0.010 (a budget of 0.01MB)

    def fmt_bound(self, cost: Cost, up: bool) -> str:
        """:meth:`fmt` of ``cost``, rounded away from the inside of a range: a feasible range's low end up and its high
        end down, so that each end, typed back as a budget, is feasible (2.08333 bits shown as 2.083 was refused), as
        `violation` compares it (a top of 2.6 us was shown as 2.599)."""
        text = self.fmt(self.measure(cost))
        number, unit = text.split(" ", 1)
        shown = Decimal(number)
        typed = parse_budget(f"{shown}{unit}").violation(cost)
        if typed > 0 if up else typed < 0:
            exponent = shown.as_tuple().exponent
            if self.kind == "latency_ms":  # by a nanosecond, as fmt prints it: not by the last digit its trimming left
                exponent = -_LATENCY_DIGITS[unit]
            if self.kind == "bytes" and len(shown.as_tuple().digits) < 4:  # 0.099996 MB shown as 0.1 by fmt's 4 digits:
                exponent = shown.adjusted() - 3  # down by its 4th (0.0999), not by 0.1 to '0.0 MB'
            step = Decimal((0, (1,), exponent))
            shown = shown + step if up else shown - step
        return f"{shown:f} {unit}"  # fixed point: 0.0000005 s, not 5E-7

    @property
    def is_latency(self) -> bool:
        return self.kind == "latency_ms"

    @property
    def binary_size(self) -> bool:
        """Whether this is a size budget typed in binary units (KiB, MiB, GiB): sizes shown beside it are in them too,
        since 29.53 MiB within a 30MiB budget read '30.96 MB', over it at a glance."""
        return self.kind == "bytes" and _typed_unit(self.text).endswith("ib")

    @property
    def shown(self) -> str:
        """The text as typed, with its unit where it was left out: a bare '3.5' (bits per weight) reads '3.5 bits'."""
        text = self.text.strip()
        return f"{text} bits" if self.kind == "bits" and re.fullmatch(r"[0-9.eE+-]+", text) else text

    def check_feasible(self, cheapest: Cost, dearest: Cost, latency_source: str | None = None, pinned: bool = False) -> str | None:
        """Refuse a budget that no assignment meets; return a note (else ``None``) if every assignment meets it.
        ``pinned``: some layers are pinned, which moves the range (said: a pin to fp16 raised the floor unseen)."""
        low, high = self.fmt_bound(cheapest, up=True), self.fmt_bound(dearest, up=False)
        space = "this model and search space" + (" with its pins" if pinned else "")
        if _amount(low) >= _amount(high):  # one assignment (every layer pinned), or a range narrower than the rounding
            cost = self.fmt(self.measure(cheapest))  # rounded to nearest: 4.102 bits for 4.1025, which as a budget is refused
            span = f"every assignment of {space} costs {cost if cost == low else f'about {cost}'}, so a budget of {low} or more fits it"
        else:
            span = f"the feasible range for {space} is {low} to {high}"
        if self.is_latency and latency_source:
            span += f" (latency source: {latency_source})"
        if self.violation(cheapest) > 0:
            raise AutoqError(f"budget {self.text!r} is below the cheapest assignment; {span}")
        if self.violation(dearest) < 0:
            return (f"budget {self.text!r} is above the dearest assignment, so every assignment meets it and it does not "
                    f"narrow the search; {span}")
        return None


def _typed_unit(text: str) -> str:
    """The unit of a budget's text, lower case ('' for none, or for a text that is no budget)."""
    match = _split(text)
    return match[1].lower() if match else ""


def _split(text: str) -> tuple[str, str] | None:
    """A budget's text as (number, unit as written), or ``None`` for a text that is no budget."""
    match = _BUDGET_RE.fullmatch(text.strip())
    return (match.group(1), match.group(2)) if match else None


def _trimmed(number: str) -> str:
    """A decimal without trailing zeros past its third: '0.013384' and '3.000', not '3.000000'."""
    whole, _, decimals = number.partition(".")
    kept = decimals.rstrip("0")
    return f"{whole}.{kept.ljust(3, '0')}" if decimals else number


def _amount(text: str) -> float:
    """A `Budget.fmt` text as a number in one unit (bits, bytes or ms), to compare two of them."""
    number, unit = text.split(" ", 1)
    return float(number) * _SHOWN[unit]


def parse_budget(text: str | float | Budget) -> Budget:
    """Parse a budget string; a bare number means bits per weight."""
    if isinstance(text, Budget):
        return text
    raw = str(text)
    return Budget(*_parse(raw), raw)


def _as_text(kind: str, value: float) -> str:
    """A text that parses back to exactly ``(kind, value)``: bits as such, bytes in kB, a latency in ms."""
    unit, scale = {"bits": ("bits", "1"), "bytes": ("kB", "1000"), "latency_ms": ("ms", "1")}[kind]
    return f"{(Decimal(repr(value)) / Decimal(scale)).normalize():f}{unit}"


def _parse(raw: str) -> tuple[str, float]:
    """``(kind, value)`` of a budget's text, or an error saying what a budget looks like."""
    match = _split(raw)
    if not match or match[1].lower() not in _UNITS:
        unit = f" ({match[1]!r} is no unit autoq knows: bits, kB, MB, GB, KiB, MiB, GiB, us, ms or s)" if match else ""
        raise AutoqError(f"cannot parse budget {raw!r}; expected a positive number with a unit, {_EXAMPLES}, or a latency like "
                         f"{_LATENCY_EXAMPLES.removeprefix('e.g. ')}{unit}")
    typed, written = match
    number, unit = float(typed), written.lower()
    kind, scale = _UNITS[unit]
    examples = _LATENCY_EXAMPLES if kind == "latency_ms" else _EXAMPLES  # in the kind of budget typed
    if not number > 0:  # '1e-400' is positive, and 0 as a float: too small a budget to be one
        why = "is too small to be a number" if Decimal(typed) > 0 else "must be positive"
        raise AutoqError(f"budget {raw!r} {why}, {examples}")
    if not math.isfinite(number * scale):  # '1e400' overflows to inf: a budget nothing can be measured against
        raise AutoqError(f"budget {raw!r} is too large to be a number; {examples}")
    # in decimal, then rounded once: 0.015662 * 1e6 in floats is 15661.999..., which refused the 15,662-byte assignment
    # that '0.015662MB' names as below the cheapest one. Only for a finite number: Decimal's context refuses exponents
    # past 999999 (decimal.Overflow), which the float check above turns into words
    value = float(Decimal(typed) * Decimal(repr(scale)))
    if not value > 0:  # '5e-324us' is a positive float, and 0 once in ms
        raise AutoqError(f"budget {raw!r} is too small to be a number, {examples}")
    # 'Mb', 'Kib' are megabits, kibibits by the SI convention, 8x less than read as bytes; a unit all in lower case
    # ('mb', 'kb', 'gib') is read as bytes, as typed in haste ('kb' alone was refused, as kilobits, while 'mb' was bytes).
    # After the number's own checks: '-1Mb' was offered '-1MB', itself refused
    if re.fullmatch(r"[KMG]i?b", written):
        prefix = {"K": "kilo", "M": "mega", "G": "giga"}[written[0]]
        bits = prefix[:2] + "bi" if "i" in written else prefix
        raise AutoqError(f"budget {raw!r} reads as {bits}bits; a size budget is in bytes: '{typed}{written[:-1].replace('k', 'K')}B'")
    return kind, value


def check_latency_config(budget: Budget, device: str | None) -> None:
    """A latency budget without a device is refused before any loading, naming ``--device``."""
    if budget.is_latency and device is None:
        raise AutoqError(f"budget {budget.text!r} is a latency; {NEEDS_DEVICE}")
