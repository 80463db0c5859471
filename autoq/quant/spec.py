"""`QuantSpec`: how one weight tensor is stored, and what that costs in bits.

The accounting here is the contract behind a budget such as ``4.5bits``:
every scale and every zero point is stored as fp16 (16 bits) and counted.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass

import numpy as np

from autoq.errors import AutoqError

SUPPORTED_BITS = (2, 3, 4, 5, 6, 8, 16)
GRANULARITIES = ("tensor", "channel", "group")
GROUP_SIZES = (32, 64, 128)
PARAM_BITS = 16  # scales and zero points are fp16

_NAME_RE = re.compile(r"int([1-9][0-9]*)-(tensor|ch|g([1-9][0-9]*))-(sym|asym)")  # fullmatch: no leading zeros, no trailing newline; ASCII digits


def whole_number(value: object, what: str) -> int:
    """``value`` as an int (numpy integers too); a float such as 4.0 is refused, naming ``what``: it passed range
    checks as 4 and made a format name ('int4.0-ch-asym') that no name parses back."""
    try:
        return operator.index(value)
    except TypeError:
        raise AutoqError(f"{what} must be a whole number, got {value!r}") from None


def truth_value(value: object, what: str) -> bool:
    """``value`` as a bool (``numpy.bool_`` too); anything else is refused, naming ``what``: ``symmetric="false"`` was
    true, and named a format ('int4-ch-sym') that parsed back as another object."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise AutoqError(f"{what} must be True or False, got {type(value).__name__} {value!r}")


@dataclass(frozen=True)
class QuantSpec:
    """Integer weight format of one layer.

    ``bits=16`` means "kept in half precision": no integer codes, no scales.
    ``granularity`` is one of ``tensor`` (one scale), ``channel`` (one per output
    channel) or ``group`` (one per ``group_size`` consecutive inputs of each output).
    """

    bits: int
    granularity: str = "channel"
    group_size: int | None = None
    symmetric: bool = False

    def __post_init__(self) -> None:
        for field in ("bits", "group_size"):  # 4.0 passed the checks below as 4 and named 'int4.0-ch-asym'
            value = getattr(self, field)
            if value is not None:
                object.__setattr__(self, field, whole_number(value, field))
        object.__setattr__(self, "symmetric", truth_value(self.symmetric, "symmetric"))
        if self.bits not in SUPPORTED_BITS:
            raise AutoqError(f"unsupported bit-width {self.bits}; choose one of {SUPPORTED_BITS}")
        if self.granularity not in GRANULARITIES:
            raise AutoqError(
                f"unknown granularity {self.granularity!r}; choose one of {GRANULARITIES}"
            )
        if self.granularity == "group":
            if self.group_size not in GROUP_SIZES:
                raise AutoqError(
                    f"group size {self.group_size} is not supported; choose one of {GROUP_SIZES}"
                )
        elif self.group_size is not None:
            raise AutoqError("group_size is only meaningful with granularity='group'")
        if self.bits == 16 and (self.granularity != "tensor" or self.symmetric):
            # Normalise: half precision has no granularity; one canonical spec.
            object.__setattr__(self, "granularity", "tensor")
            object.__setattr__(self, "group_size", None)
            object.__setattr__(self, "symmetric", False)

    @classmethod
    def half(cls) -> QuantSpec:
        """The "kept in half precision" format."""
        return cls(bits=16, granularity="tensor")

    @property
    def is_half(self) -> bool:
        return self.bits == 16

    @property
    def qmin(self) -> int:
        return 0

    @property
    def qmax(self) -> int:
        return (1 << self.bits) - 1

    @property
    def name(self) -> str:
        """Compact, parseable name such as ``int4-g128-asym`` or ``fp16``."""
        if self.is_half:
            return "fp16"
        gran = {"tensor": "tensor", "channel": "ch"}.get(self.granularity, f"g{self.group_size}")
        return f"int{self.bits}-{gran}-{'sym' if self.symmetric else 'asym'}"

    @classmethod
    def from_name(cls, name: str) -> QuantSpec:
        if name == "fp16":
            return cls.half()
        match = _NAME_RE.fullmatch(name)
        if not match:
            raise AutoqError(
                f"cannot parse quantization format {name!r}; expected e.g. 'int4-g128-asym', "
                "'int8-ch-sym', 'int3-tensor-asym' or 'fp16'"
            )
        bits, gran, group, sym = match.groups()
        if int(bits) not in SUPPORTED_BITS:  # QuantSpec's own message offered 16, which is refused next
            raise AutoqError(f"unsupported bit-width in {name!r}: choose int2, int3, int4, int5, int6 or int8, or 'fp16' for half precision")
        if int(bits) == 16:  # QuantSpec(16, ...) is half precision: 'int16-ch-sym' read as fp16 without a word
            raise AutoqError(f"{name!r} is no integer format: choose int2 to int8 ({name.replace('int16', 'int8')!r}), or 'fp16' "
                             "for half precision")
        if gran == "tensor":
            return cls(int(bits), "tensor", None, sym == "sym")
        if gran == "ch":
            return cls(int(bits), "channel", None, sym == "sym")
        return cls(int(bits), "group", int(group), sym == "sym")

    def n_param_groups(self, out_features: int, in_features: int) -> int:
        """How many (scale, zero) groups a weight of shape (out, in) has."""
        if self.is_half:
            return 0
        if self.granularity == "tensor":
            return 1
        if self.granularity == "channel":
            return out_features
        assert self.group_size is not None
        return out_features * math.ceil(in_features / self.group_size)

    def storage_bits(self, out_features: int, in_features: int) -> int:
        """Exact bits to store a weight of shape (out, in): codes + fp16 scales (+ zeros)."""
        n = out_features * in_features
        if self.is_half:
            return n * 16
        per_group = PARAM_BITS * (1 if self.symmetric else 2)
        return n * self.bits + self.n_param_groups(out_features, in_features) * per_group

    def storage_bytes(self, out_features: int, in_features: int) -> int:
        """Bytes of the packed form: codes packed to whole bytes, then fp16 params."""
        n = out_features * in_features
        if self.is_half:
            return n * 2
        per_group = 2 * (1 if self.symmetric else 2)
        return math.ceil(n * self.bits / 8) + self.n_param_groups(out_features, in_features) * per_group

    def bits_per_weight(self, out_features: int, in_features: int) -> float:
        return self.storage_bits(out_features, in_features) / (out_features * in_features)
