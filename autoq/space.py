"""`SearchSpace`: the candidate `LayerChoice`s of every layer of one model.

Built from a preset (see ``autoq.search_spaces``), the model's quantizable layers
and the user's pins (``pattern=choice``: a layer matching ``pattern`` may only
take ``choice``). Options that are identical for a layer (a group at least as
wide as the layer's input is just per-channel) are kept once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from autoq.choice import Assignment, LayerChoice
from autoq.cost import Cost, CostModel
from autoq.errors import AutoqError
from autoq.model import LayerInfo, compile_patterns, name_examples
from autoq.ptq import get_method, method_needs_stats
from autoq.quant import QuantSpec
from autoq.quant.activation import ActSpec
from autoq.search_spaces import Preset, Rule, check_against_layers, parse_granularity


def _activation(act: str | None, layer: LayerInfo) -> ActSpec | None:
    """A rule's activation format as ``layer`` takes it: none on a convolution, nor a static (calibrated) one on a
    layer without calibration rows."""
    if not act or not layer.is_linear:
        return None
    spec = ActSpec.from_name(act)
    return None if spec.static and layer.no_rows else spec


def _for_layer(spec: QuantSpec, layer: LayerInfo) -> QuantSpec:
    """``spec`` as ``layer`` stores it: a group as wide as its input (or wider) is one group a row, per-channel."""
    if spec.granularity == "group" and spec.group_size is not None and spec.group_size >= layer.in_features:
        return dataclasses.replace(spec, granularity="channel", group_size=None)
    return spec


def _check_pinned_groups(pin_rules: Sequence[tuple[re.Pattern, LayerChoice, str]], layers: Sequence[LayerInfo]) -> None:
    """Refuse a pin whose group is as wide as every layer it matches (at least): it was stored per-channel unsaid, under
    the pinned name. As for a rule, a pin matching every layer is generic, and a narrow layer's group is per-channel."""
    for pattern, choice, written in pin_rules:
        governed = [layer for layer in layers if pattern.search(layer.name)]
        size = choice.weight.group_size if choice.weight.granularity == "group" else None
        if size is None or not governed or len(governed) == len(layers):
            continue
        widest = max(governed, key=lambda layer: layer.in_features)
        if size >= widest.in_features:
            raise AutoqError(f"pin {written!r}: group size g{size} is impossible here: the widest layer it matches "
                             f"({widest.name!r}) has only {widest.in_features} inputs, one group at most (per-channel); pin "
                             f"{dataclasses.replace(choice, weight=_for_layer(choice.weight, widest)).name!r} or a smaller group")


def _rule_choices(rule: Rule, layer: LayerInfo, where: str) -> dict[str, LayerChoice]:
    """Option label (as written in the preset, e.g. ``int4-g128-asym:rtn-mse``) -> the layer's choice.

    Labels keep the preset's wording so "uniform int4-g128" means the same thing on
    every layer even where a narrow layer turns g128 into per-channel, or where a
    convolution, which cannot take an activation format, turns ``+a8-tensor`` weight-only.
    A layer data-driven methods cannot run on (``LayerInfo.no_rows``: a depthwise
    convolution, a layer the calibration data never reaches) gets the rule's data-free
    methods only, and its static activation formats (calibrated ranges) turn weight-only.
    """
    for method in rule.methods:
        get_method(method)  # unknown method -> AutoqError naming the known ones
    methods = [m for m in rule.methods if not (layer.no_rows and method_needs_stats(m))]
    if not methods and any(bits != 16 for bits in rule.bits):  # fp16 alone runs no method: a rule of bits [16] was refused
        raise AutoqError(f"{where} gives {layer.name!r} only data-driven methods {list(rule.methods)}, and {layer.no_rows} cannot take "
                         "them; add a data-free method such as rtn-mse to the rule, or a rule for this layer before it, or skip the layer")
    labelled: dict[str, LayerChoice] = {}
    for bits in rule.bits:
        if bits == 16:
            continue
        for token in rule.granularity:
            gran, group = parse_granularity(token, where)
            for sym in rule.symmetric:
                spec = _for_layer(QuantSpec(bits, gran, group, sym), layer)
                for method in methods:
                    for act in rule.activations:
                        label = f"int{bits}-{'ch' if token == 'channel' else token}-{'sym' if sym else 'asym'}:{method}"
                        label += f"+{act}" if act else ""
                        labelled[label] = LayerChoice(spec, method, _activation(act, layer))
    if rule.half or 16 in rule.bits:
        labelled["fp16"] = LayerChoice(QuantSpec.half())
    return labelled


@dataclass(frozen=True)
class SearchSpace:
    """Per-layer candidate choices, in model order."""

    layers: tuple[LayerInfo, ...]
    options: tuple[tuple[LayerChoice, ...], ...]
    labels: tuple[dict[str, LayerChoice], ...] = ()  # preset label -> choice per layer; {} if pinned

    @classmethod
    def build(cls, preset: Preset, layers: Sequence[LayerInfo], pins: Mapping[str, str] | None = None,
              skipped: Sequence[str] = ()) -> SearchSpace:
        """``skipped``: the quantizable layers the skip patterns left out, which a pattern matching nothing else is told of."""
        pins = dict(pins or {})
        check_against_layers(preset, layers, skipped)
        pin_rules = [(r, _pinned_choice(p, c), p) for r, (p, c) in zip(compile_patterns(pins, "pin"), pins.items())]
        _check_pinned_groups(pin_rules, layers)
        used_pins: set[str] = set()
        options, labels = [], []
        for layer in layers:
            matching = [(c, p) for r, c, p in pin_rules if r.search(layer.name)]
            if len({c for c, _ in matching}) > 1:
                raise AutoqError(f"pins {[p for _, p in matching]} all match layer {layer.name!r} and give it different choices "
                                 f"({', '.join(c.name for c, _ in matching)}); make the patterns exclusive (anchor one: "
                                 f"'^{re.escape(layer.name)}$') or give them the same choice")
            used_pins.update(p for _, p in matching)
            pinned = matching[0] if matching else None
            if pinned is not None:
                if layer.no_rows and not pinned[0].weight.is_half and method_needs_stats(pinned[0].method):
                    raise AutoqError(f"pin {pinned[1]!r} gives {layer.name!r} {pinned[0].name!r}, a data-driven method, and {layer.no_rows} "
                                     "cannot take it; pin a data-free method there (rtn-mse, say)")
                if pinned[0].activation is not None and not layer.is_linear:
                    raise AutoqError(f"pin {pinned[1]!r} gives {layer.name!r}, a {layer.kind} layer, the activation format of "
                                     f"{pinned[0].name!r}; activation formats run on linear layers only: pin "
                                     f"{LayerChoice(pinned[0].weight, pinned[0].method).name!r} there")
                if layer.no_rows and pinned[0].activation is not None and pinned[0].activation.static:  # every trial failed on it
                    raise AutoqError(f"pin {pinned[1]!r} gives {layer.name!r} {pinned[0].name!r}, whose static activation format "
                                     f"{pinned[0].activation.name} calibrates its range on the layer's inputs, and {layer.no_rows} "
                                     "has none; pin a dynamic format (a8-token) or a weight-only choice there")
                options.append((dataclasses.replace(pinned[0], weight=_for_layer(pinned[0].weight, layer)),))  # as a rule's
                labels.append({})
                continue
            idx = preset.rule_for(layer.name)
            if idx is None:
                source = next((r.source for r in preset.rules if r.source), "")  # the file, as every other space error names it
                raise AutoqError(f"search space {source or repr(preset.name)} has no rule for layer {layer.name!r}; add a catch-all "
                                 "rule (layers: '.*')")
            labelled = _rule_choices(preset.rules[idx], layer, preset.rules[idx].where("methods", idx + 1))
            distinct = tuple(dict.fromkeys(labelled.values()))
            options.append(distinct)
            labels.append(labelled)
        unused_pins = sorted(set(p for _, _, p in pin_rules) - used_pins)
        if unused_pins:
            left_out = [n for n in skipped if any(re.search(p, n) for p in unused_pins)]
            if left_out:
                raise AutoqError(f"pin pattern(s) {unused_pins} match only layers the skip patterns leave out ({', '.join(map(repr, left_out[:3]))}): "
                                 "drop the pin, or the skip pattern that takes its layers")
            raise AutoqError(f"pin pattern(s) {unused_pins} match no quantizable layer; {name_examples([x.name for x in layers])} "
                             "(patterns are regular expressions searched in these names)")
        return cls(tuple(layers), tuple(options), tuple(labels))

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def pinned(self) -> tuple[bool, ...]:
        """Per layer, whether a pin fixed its choice (a pinned layer has no preset labels)."""
        return tuple(not labels for labels in self.labels) if self.labels else (False,) * len(self.options)

    @property
    def digest(self) -> str:
        """A hash of every layer's options: a resume compares it, so that a space file edited since is refused (its
        trials would not fit the study's parameters, which Optuna refuses mid-search)."""
        blob = json.dumps([[layer.name, [c.name for c in opts]] for layer, opts in zip(self.layers, self.options)])
        return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()

    def latency_digest(self, cost_model: CostModel) -> str | None:
        """A hash of every option's latency under ``cost_model``'s latency source (``None`` without one): a resume
        compares it, so that a table re-measured or rewritten since (or another autoq's) does not price the new trials
        otherwise than the stored ones, under one Pareto front."""
        if cost_model.latency is None:
            return None
        prices = [[repr(cost_model.layer_us(layer, c)) for c in opts] for layer, opts in zip(self.layers, self.options)]
        return hashlib.blake2b(json.dumps(prices).encode(), digest_size=8).hexdigest()

    @property
    def methods(self) -> set[str]:
        """The PTQ methods the options quantize with (a layer kept fp16 quantizes with none)."""
        return {c.method for opts in self.options for c in opts if not c.weight.is_half}

    def assignment(self, indices: Sequence[int]) -> Assignment:
        return Assignment(tuple((layer.name, opts[i]) for layer, opts, i in zip(self.layers, self.options, indices)))

    def validate(self, assignment: Mapping[str, LayerChoice]) -> None:
        """Refuse an assignment naming unknown layers, missing layers, or choices outside the space."""
        unknown = set(assignment) - set(self.names)
        if unknown:
            raise AutoqError(f"unknown layer name(s) {sorted(unknown)[:5]}; {name_examples(self.names)}")
        for layer, opts in zip(self.layers, self.options):
            if layer.name not in assignment:
                raise AutoqError(f"assignment has no choice for layer {layer.name!r}")
            if assignment[layer.name] not in opts:
                raise AutoqError(f"{assignment[layer.name].name!r} is not an option of layer {layer.name!r}")

    def uniform_assignments(self) -> list[Assignment]:
        """One assignment per preset option that every unpinned layer offers (pinned layers keep their pin)."""
        return list(self.uniform_by_label().values())

    def uniform_by_label(self) -> dict[str, Assignment]:
        """`uniform_assignments` by the preset option each gives every layer (its label: on a layer narrower than a
        group, ``int4-g128-asym`` is that layer's per-channel format, so no layer's choice names it reliably)."""
        common = [label for label in dict.fromkeys(lab for labs in self.labels for lab in labs)
                  if all(label in labs for labs in self.labels if labs)]
        result: dict[str, Assignment] = {}
        for label in common:
            picks = [opts.index(labs[label]) if labs else 0 for opts, labs in zip(self.options, self.labels)]
            candidate = self.assignment(picks)
            if candidate not in result.values():
                result[label] = candidate
        return result

    def extremes(self, cost_model: CostModel, kind: str = "bits") -> tuple[Cost, Cost]:
        """Costs of the cheapest and the dearest assignment by a budget ``kind`` (costs are additive per layer)."""
        cheap, dear = [], []
        for layer, opts in zip(self.layers, self.options):
            bits = [cost_model.layer_amount(layer, c, kind) for c in opts]
            cheap.append(bits.index(min(bits)))
            dear.append(bits.index(max(bits)))
        return cost_model.cost(self.assignment(cheap)), cost_model.cost(self.assignment(dear))


def _pinned_choice(pattern: str, name: str) -> LayerChoice:
    """``LayerChoice.from_name(name)`` with a PTQ method the registry has, its error naming the pin as the user wrote it
    (``pattern=choice``)."""
    try:
        choice = LayerChoice.from_name(name)
        if not choice.weight.is_half:
            get_method(choice.method)
    except AutoqError as exc:
        raise AutoqError(f"pin {f'{pattern}={name}'!r}: {exc}") from None
    return choice
