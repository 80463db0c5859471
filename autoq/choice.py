"""`LayerChoice` (one option for one layer) and `Assignment` (a choice for every layer).

An assignment is data, never code: it serialises to small versioned JSON that
is logged with every trial and read back for export.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from autoq.errors import AutoqError
from autoq.quant import QuantSpec

ASSIGNMENT_VERSION = 1
HALF_METHOD = "none"


@dataclass(frozen=True)
class LayerChoice:
    """Weight format plus the PTQ method that produces it."""

    weight: QuantSpec
    method: str = "rtn-mse"

    def __post_init__(self) -> None:
        if self.weight.is_half and self.method != HALF_METHOD:
            object.__setattr__(self, "method", HALF_METHOD)

    @property
    def name(self) -> str:
        """``int4-g128-asym:rtn-mse``; ``fp16`` for a layer kept in half precision."""
        return "fp16" if self.weight.is_half else f"{self.weight.name}:{self.method}"

    @classmethod
    def from_name(cls, name: str) -> LayerChoice:
        if name == "fp16":
            return cls(QuantSpec.half())
        spec, sep, method = name.partition(":")
        if not sep or not method:
            raise AutoqError(f"cannot parse layer choice {name!r}; expected 'FORMAT:METHOD' such as 'int4-g128-asym:rtn-mse', or 'fp16'")
        return cls(QuantSpec.from_name(spec), method)


@dataclass(frozen=True)
class Assignment(Mapping[str, LayerChoice]):
    """Layer name -> `LayerChoice`, in model order. Immutable and hashable."""

    items_: tuple[tuple[str, LayerChoice], ...] = field(default=())

    @classmethod
    def from_dict(cls, choices: Mapping[str, LayerChoice]) -> Assignment:
        return cls(tuple(choices.items()))

    def __getitem__(self, key: str) -> LayerChoice:
        for name, choice in self.items_:
            if name == key:
                return choice
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self.items_)

    def __len__(self) -> int:
        return len(self.items_)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def to_dict(self) -> dict:
        return {
            "format": "autoq.assignment",
            "version": ASSIGNMENT_VERSION,
            "layers": {name: choice.name for name, choice in self.items_},
        }

    @classmethod
    def from_json(cls, text: str) -> Assignment:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AutoqError(f"assignment is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != "autoq.assignment":
            raise AutoqError("not an autoq assignment (missing 'format': 'autoq.assignment')")
        if data.get("version") != ASSIGNMENT_VERSION:
            raise AutoqError(f"assignment version {data.get('version')} is not supported (expected {ASSIGNMENT_VERSION})")
        layers = data.get("layers")
        if not isinstance(layers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in layers.items()):
            raise AutoqError("assignment 'layers' must map layer names to choice names such as 'int4-g128-asym:rtn-mse'")
        return cls(tuple((name, LayerChoice.from_name(c)) for name, c in layers.items()))

    def summary(self) -> str:
        """Counts of each choice, for tables: ``int4-g128-asym:rtn-mse x30, fp16 x2``."""
        counts: dict[str, int] = {}
        for _, choice in self.items_:
            counts[choice.name] = counts.get(choice.name, 0) + 1
        return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
