"""`LayerChoice` (one option for one layer) and `Assignment` (a choice for every layer).

An assignment is data, never code: it serialises to small versioned JSON that
is logged with every trial and read back for export.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from autoq.errors import AutoqError
from autoq.files import parse_json
from autoq.quant import QuantSpec
from autoq.quant.activation import ActSpec

ASSIGNMENT_VERSION = 1
HALF_METHOD = "none"


@dataclass(frozen=True)
class LayerChoice:
    """Weight format plus the PTQ method that produces it, and optionally an activation format.

    Activation quantization simulates a W8A8-style deployment; it does not change the
    stored size (the cost model counts weight bits only). A layer kept in fp16 has none.
    """

    weight: QuantSpec
    method: str = "rtn-mse"
    activation: ActSpec | None = None

    def __post_init__(self) -> None:
        if self.weight.is_half and self.method != HALF_METHOD:
            object.__setattr__(self, "method", HALF_METHOD)
        if self.weight.is_half and self.activation is not None:
            object.__setattr__(self, "activation", None)

    @property
    def name(self) -> str:
        """``int4-g128-asym:rtn-mse``, ``int8-ch-sym:smoothquant+a8-tensor``; ``fp16`` for half precision."""
        if self.weight.is_half:
            return "fp16"
        act = f"+{self.activation.name}" if self.activation is not None else ""
        return f"{self.weight.name}:{self.method}{act}"

    @classmethod
    def from_name(cls, name: str) -> LayerChoice:
        if name == "fp16":
            return cls(QuantSpec.half())
        spec, sep, rest = name.partition(":")
        method, plus, act = rest.partition("+")
        if not sep or not method or (plus and not act):
            raise AutoqError(
                f"cannot parse layer choice {name!r}; expected 'FORMAT:METHOD[+ACT]' such as 'int4-g128-asym:rtn-mse', "
                "'int8-ch-sym:smoothquant+a8-tensor', or 'fp16'"
            )
        if spec == "fp16":  # it quantized nothing: the method and activation format were dropped without a word
            raise AutoqError(f"layer choice {name!r}: fp16 keeps the layer in half precision, with no method or activation format; "
                             "write 'fp16', or an integer format such as 'int8-ch-sym:smoothquant+a8-tensor'")
        return cls(QuantSpec.from_name(spec), method, ActSpec.from_name(act) if act else None)


REPR_LAYERS = 8  # an assignment of at most this many layers shows each one's choice in its repr


@dataclass(frozen=True)
class Assignment(Mapping[str, LayerChoice]):
    """Layer name -> `LayerChoice`, in model order. Immutable and hashable."""

    # given as pairs or a {layer: choice} mapping, choices as LayerChoice or names; held as a tuple of pairs (__post_init__)
    items_: Sequence[tuple[str, LayerChoice | str]] | Mapping[str, LayerChoice | str] = field(default=())

    def __post_init__(self) -> None:
        """Take ``{layer: choice}`` too (its repr's form), a choice as a `LayerChoice` or its name; refuse anything else
        in words: a dict was read as pairs, each layer name split into characters, and a choice name stayed a string."""
        items = tuple(self.items_.items()) if isinstance(self.items_, Mapping) else self.items_
        pairs = []
        for pair in items:
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[0], str)):
                raise AutoqError(f"an Assignment maps layer names to choices, Assignment({{'layer': 'int4-ch-asym:rtn-mse'}}); got "
                                 f"{type(self.items_).__name__} with {pair!r}")
            name, choice = pair
            if isinstance(choice, str):
                choice = _layer_choice(name, choice)
            elif not isinstance(choice, LayerChoice):
                raise AutoqError(f"layer {name!r}: a choice is a LayerChoice or its name ('int4-ch-asym:rtn-mse'), got "
                                 f"{type(choice).__name__} {choice!r}")
            pairs.append((name, choice))
        if len({name for name, _ in pairs}) < len(pairs):  # a look-up took the first, to_json the last: an export said fp16 of an int4 layer
            twice = [name for name, count in Counter(name for name, _ in pairs).items() if count > 1]
            raise AutoqError(f"an Assignment names each layer once; {', '.join(map(repr, twice))} "
                             f"{'is' if len(twice) == 1 else 'are'} given more than once: keep one choice per layer")
        object.__setattr__(self, "items_", tuple(pairs))

    @classmethod
    def from_dict(cls, choices: Mapping[str, LayerChoice | str]) -> Assignment:
        return cls(tuple(choices.items()))

    @cached_property
    def _index(self) -> dict[str, LayerChoice]:
        """Name -> choice, built on first use (not a field: equality, hashing and pickles are those of ``items_``). A
        scan of ``items_`` per look-up made ``cost()`` and ``items()`` quadratic: 0.6 s for 3,200 layers, per trial."""
        index: dict[str, LayerChoice] = {}
        for name, choice in self.items_:
            index.setdefault(name, choice)
        return index

    def __getitem__(self, key: str) -> LayerChoice:
        try:
            return self._index[key]
        except (KeyError, TypeError):  # TypeError: an unhashable key, which names no layer either
            raise KeyError(key) from None

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self.items_)

    def __len__(self) -> int:
        return len(self.items_)

    def __repr__(self) -> str:
        """Each layer's choice by name where there are few, else the counts of each choice: the dataclass's repr of a
        37-layer assignment was 9 kB, and a search result's, repeating it per point, 770 kB in a notebook."""
        if len(self.items_) <= REPR_LAYERS:
            return f"Assignment({ {name: choice.name for name, choice in self.items_}!r})"
        return f"Assignment(<{len(self.items_)} layers: {self.summary()}>)"

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
        data = parse_json(text, "assignment")
        if not isinstance(data, dict) or data.get("format") != "autoq.assignment":
            raise AutoqError("not an autoq assignment (missing 'format': 'autoq.assignment')")
        if data.get("version") != ASSIGNMENT_VERSION:
            raise AutoqError(f"assignment version {data.get('version')} is not supported (expected {ASSIGNMENT_VERSION})")
        layers = data.get("layers")
        if not isinstance(layers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in layers.items()):
            raise AutoqError("assignment 'layers' must map layer names to choice names such as 'int4-g128-asym:rtn-mse'")
        return cls(tuple((name, _layer_choice(name, c)) for name, c in layers.items()))

    def summary(self) -> str:
        """Counts of each choice, for tables: ``int4-g128-asym:rtn-mse x30, fp16 x2``."""
        counts: dict[str, int] = {}
        for _, choice in self.items_:
            counts[choice.name] = counts.get(choice.name, 0) + 1
        return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def _layer_choice(layer: str, name: str) -> LayerChoice:
    """``LayerChoice.from_name(name)``, its error naming the assignment's layer: a file may hold hundreds."""
    try:
        return LayerChoice.from_name(name)
    except AutoqError as exc:
        raise AutoqError(f"assignment layer {layer!r}: {exc}") from None
