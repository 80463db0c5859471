"""Search-space presets (YAML files in this folder) and their loader.

A preset is a list of rules; each layer takes the first rule whose ``layers``
regex matches its name. A rule lists the bit-widths, granularities
(``tensor``, ``channel``, ``g32``, ``g64``, ``g128``), symmetry and PTQ methods
allowed, optional activation formats (``activations: [none, a8-tensor, a8-token]``),
and whether fp16 ("kept in half precision") is an option.

Errors name the file and YAML line: at load for an unknown method, granularity or
activation format; against the model's layers (:func:`check_against_layers`, called
by ``SearchSpace.build``) for a rule whose pattern takes no layer, or a group size
at least as wide as every layer the rule governs.
"""

from __future__ import annotations

import io
import re
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from autoq.budget import Budget
from autoq.errors import AutoqError
from autoq.model import LayerInfo, compile_patterns, name_examples
from autoq.ptq import method_names
from autoq.quant.activation import ActSpec
from autoq.quant.spec import GROUP_SIZES, SUPPORTED_BITS

_RULE_KEYS = {"layers", "bits", "granularity", "symmetric", "methods", "half", "activations"}
NO_ACTIVATION = "none"
_PRESET_KEYS = {"name", "description", "rules"}


@dataclass(frozen=True)
class Rule:
    """One rule of a search space: the layers its ``layers`` pattern matches get every combination of its bits,
    granularities, symmetries, methods and activation formats (``half``: fp16 as one more option)."""

    layers: str
    bits: tuple[int, ...]
    granularity: tuple[str, ...]
    symmetric: tuple[bool, ...]
    methods: tuple[str, ...]
    half: bool
    activations: tuple[str | None, ...] = (None,)  # None: weight-only
    line: int = field(default=0, compare=False)  # YAML line of the rule (0: not from a file)
    key_lines: tuple[tuple[str, int], ...] = field(default=(), compare=False)
    source: str = field(default="", compare=False)

    def where(self, key: str | None = None, index: int | None = None) -> str:
        """``file, line N, rule I`` for error messages (the key's own line when known)."""
        line = dict(self.key_lines).get(key, self.line) if key else self.line
        parts = [p for p in (self.source, f"line {line}" if line else "", f"rule {index}" if index else "") if p]
        return ", ".join(parts) or "search space"


@dataclass(frozen=True)
class Preset:
    """A search space as written: named rules, each layer taking the first rule that matches it."""

    name: str
    description: str
    rules: tuple[Rule, ...]

    def rule_for(self, layer_name: str) -> int | None:
        """The index of the first rule whose pattern matches ``layer_name`` (``None``: no rule does)."""
        return next((i for i, r in enumerate(self.rules) if re.search(r.layers, layer_name)), None)


def parse_granularity(token: str, where: str) -> tuple[str, int | None]:
    """``(granularity, group size)`` a rule's token names: ``tensor``/``channel`` (no size) or ``gN`` for a supported
    N (``group``, N); anything else is refused, ``where`` naming the rule."""
    if token in {"tensor", "channel"}:
        return token, None
    match = re.fullmatch(r"g([1-9][0-9]*)", token)  # ASCII digits: \d took "g1２８" for g128
    if not match or int(match.group(1)) not in GROUP_SIZES:
        raise AutoqError(f"{where}: unknown granularity {token!r}; use tensor, channel, " + ", ".join(f"g{g}" for g in GROUP_SIZES))
    return "group", int(match.group(1))


def preset_names() -> list[str]:
    return sorted(p.name[: -len(".yaml")] for p in resources.files(__name__).iterdir() if p.name.endswith(".yaml"))


def _as_tuple(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def _shown(value: Any) -> str:
    """``value`` for a message, its lists and text cut short: a 453-byte file of YAML aliases (each a list of ten of the
    one before) spelled out in full was an error line of 58 MB."""
    short = reprlib.Repr()  # its limits by keyword from Python 3.12
    short.maxlevel, short.maxlist, short.maxdict, short.maxstring, short.maxother = 1, 8, 8, 80, 80  # 'bits' lists 7 at most
    return short.repr(value)


def _names(raw: Mapping[str, Any], key: str, at: Any, example: str) -> tuple:
    """The values a rule's ``key`` lists, each a name (or a number or null, which the name checks refuse by name), not a
    list or a mapping: those were written out with ``str()`` in the message that refused them."""
    values = _as_tuple(raw[key])
    if any(isinstance(value, (list, tuple, dict)) for value in values):
        raise AutoqError(f"{at(key)}: '{key}' lists names, such as {example}, got {_shown(raw[key])}")
    return values


def _rule_lines(root: yaml.Node | None) -> list[tuple[int, dict[str, int]]]:
    """(line of each rule, line of each of its keys), 1-based, from the YAML node tree."""
    if not isinstance(root, yaml.MappingNode):
        return []
    for key, value in root.value:
        if getattr(key, "value", None) == "rules" and isinstance(value, yaml.SequenceNode):
            out = []
            for item in value.value:
                keys = {k.value: v.start_mark.line + 1 for k, v in item.value} if isinstance(item, yaml.MappingNode) else {}
                out.append((item.start_mark.line + 1, keys))
            return out
    return []


def _check_names(rule: Rule, index: int) -> None:
    known = set(method_names())
    for m in rule.methods:
        if m not in known:
            raise AutoqError(f"{rule.where('methods', index)}: unknown PTQ method {m!r}; known methods: {', '.join(sorted(known))} (a "
                             "plug-in's method is known once its module is imported: --plugin MODULE on the command line)")
    for g in rule.granularity:
        parse_granularity(g, rule.where("granularity", index))
    for a in rule.activations:
        if a is not None:
            try:
                ActSpec.from_name(a)
            except AutoqError as exc:  # the rule's own value, none, is no format name: said here, as a rule takes it
                raise AutoqError(f"{rule.where('activations', index)}: {exc}; in a rule, {NO_ACTIVATION} (lower case) leaves the "
                                 "activations unquantized") from None


def _rule(raw: Any, where: str, line: int = 0, key_lines: Mapping[str, int] | None = None, source: str = "") -> Rule:
    if not isinstance(raw, dict):
        raise AutoqError(f"{where}: a rule must be a mapping with keys {sorted(_RULE_KEYS)}")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise AutoqError(f"{where}: unknown key(s) {sorted(map(str, unknown))}; allowed: {sorted(_RULE_KEYS)}")
    missing = {"bits", "granularity", "methods"} - set(raw)
    if missing:
        raise AutoqError(f"{where}: missing key(s) {sorted(missing)}")
    empty = [key for key in ("bits", "granularity", "methods", "symmetric", "activations")
             if key in raw and (raw[key] is None or _as_tuple(raw[key]) == ())]  # None: a key whose list items are commented out
    if empty:
        raise AutoqError(f"{where}: {', '.join(repr(k) for k in empty)} is empty; give at least one value "
                         "(such as bits: [4, 8], granularity: [channel], methods: [rtn-mse], symmetric: false, activations: [none])")
    def at(key: str) -> str:  # ``where`` with the key's own line, as Rule.where gives it
        own = (key_lines or {}).get(key)
        return where.replace(f"line {line}", f"line {own}", 1) if line and own else where

    bits = _as_tuple(raw["bits"])
    symmetric = _as_tuple(raw.get("symmetric", False))
    if not all(isinstance(b, int) and not isinstance(b, bool) for b in bits):
        raise AutoqError(f"{at('bits')}: 'bits' must be integers such as [2, 3, 4, 8], got {_shown(raw['bits'])}")
    unsupported = [b for b in bits if b not in SUPPORTED_BITS]
    if unsupported:
        raise AutoqError(f"{at('bits')}: unsupported bit-width(s) {unsupported} in 'bits'; choose from {list(SUPPORTED_BITS)} (16: fp16)")
    for key, values in (("symmetric", symmetric), ("half", (raw.get("half", False),))):
        if not all(isinstance(v, bool) for v in values):
            raise AutoqError(f"{at(key)}: '{key}' takes true or false (unquoted), got {_shown(raw[key])}")
    if 16 in bits and raw.get("half") is False:  # 16 in bits is fp16, and was kept as an option whatever 'half: false' said
        raise AutoqError(f"{at('half')}: 'half: false' and 16 in 'bits' contradict each other (16 bits is fp16); drop 16 from "
                         "'bits' to leave fp16 out, or write half: true")
    if not isinstance(raw.get("layers", ".*"), str):
        raise AutoqError(f"{at('layers')}: 'layers' must be a regular expression in quotes, such as '.*' or 'attention', got {_shown(raw['layers'])}")
    layers = raw.get("layers", ".*")
    try:
        compile_patterns([layers], "'layers'")
    except AutoqError as exc:
        raise AutoqError(f"{where}: {exc}") from None
    acts = _names({"activations": NO_ACTIVATION, **raw}, "activations", at, "[none, a8-token]")
    acts = tuple(None if a is None or str(a) == NO_ACTIVATION else str(a) for a in acts)
    return Rule(
        layers=layers,
        bits=tuple(bits),
        granularity=tuple(str(g) for g in _names(raw, "granularity", at, "[channel, g128]")),
        symmetric=tuple(symmetric),
        methods=tuple(str(m) for m in _names(raw, "methods", at, "[rtn-mse, gptq]")),
        half=raw.get("half", False),
        activations=acts,
        line=line,
        key_lines=tuple((key_lines or {}).items()),
        source=source,
    )


def _compose(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """The YAML node tree (for lines) and the data it holds, from one parse, keys given twice refused; the stream is
    named ``source``, so PyYAML's messages name the file, not ``<unicode string>``."""
    stream = io.StringIO(text)
    stream.name = source
    loader = yaml.SafeLoader(stream)
    try:
        root = loader.get_single_node()
        _refuse_duplicate_keys(root, source)  # before constructing: it folds merge keys ('<<') into the mappings' nodes
        return root, None if root is None else loader.construct_document(root)
    finally:
        loader.dispose()


def _refuse_duplicate_keys(node: yaml.Node | None, source: str, seen_nodes: set[int] | None = None) -> None:
    """A key written twice in one mapping is an error: YAML loaders keep the last silently, so a second ``bits:`` in a rule
    (or a second ``rules:`` block) replaced the first without a word. Each node is read once: an alias shares its anchor's
    node, and one that holds itself (``&a [*a]``) recursed without end."""
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                line = key.start_mark.line + 1
                if (key.tag, key.value) in seen:  # by key, not line: a flow mapping holds both on one line
                    raise AutoqError(f"{source}, line {line}: key {key.value!r} is given twice in one mapping "
                                     f"(first on line {seen[key.tag, key.value]}); keep one")
                seen[key.tag, key.value] = line
            _refuse_duplicate_keys(value, source, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_duplicate_keys(item, source, seen_nodes)


def _one_line(exc: yaml.YAMLError) -> str:
    """PyYAML's error in one line (its own spans several, with the source line drawn), in its order: what it was
    doing, then the problem and where (``while parsing a flow sequence (line 2): expected ',' or ']', but got ':' at line
    3, column 14``)."""
    problem, mark = getattr(exc, "problem", None), getattr(exc, "problem_mark", None)
    if not problem:
        return " ".join(str(exc).split())
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context, since = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    opening = f"{context}" + (f" (line {since.line + 1})" if since is not None else "") + ": " if context else ""
    return f"{opening}{problem}{where}"  # PyYAML's order: 'while parsing ... (line 2): expected ..., but got ...'


def parse_preset(text: str, source: str) -> Preset:
    try:
        root, data = _compose(text, source)
    except yaml.YAMLError as exc:
        raise AutoqError(f"{source}: not valid YAML: {_one_line(exc)}") from None
    except RecursionError:  # PyYAML's composer recurses a level a list: a few hundred '[' were a traceback
        raise AutoqError(f"{source}: its lists or mappings nest too deeply to read (hundreds of levels); a search space nests "
                         "three: rules, a rule, its lists") from None
    if not isinstance(data, dict) or "rules" not in data:
        unknown = sorted(map(str, set(data) - _PRESET_KEYS)) if isinstance(data, dict) else []
        has = f" (it has unknown key(s) {unknown}; allowed: {sorted(_PRESET_KEYS)})" if unknown else ""  # 'rule:' said only this
        raise AutoqError(f"{source}: a search space needs a top-level 'rules' list{has}")
    unknown = set(data) - _PRESET_KEYS
    if unknown:
        raise AutoqError(f"{source}: unknown key(s) {sorted(map(str, unknown))}; allowed: {sorted(_PRESET_KEYS)}")
    if not isinstance(data["rules"], list):
        raise AutoqError(f"{source}: 'rules' must be a list of rules")
    lines = _rule_lines(root)
    rules = []
    for i, raw in enumerate(data["rules"]):
        line, keys = lines[i] if i < len(lines) else (0, {})
        where = f"{source}, line {line}, rule {i + 1}" if line else f"{source}, rule {i + 1}"
        rule = _rule(raw, where, line, keys, source)
        _check_names(rule, i + 1)
        rules.append(rule)
    rules = tuple(rules)
    if not rules:
        raise AutoqError(f"{source}: 'rules' is empty")
    for key in ("name", "description"):
        if isinstance(data.get(key), (dict, list)):  # was written out with str(), and an alias-shared one took minutes to
            raise AutoqError(f"{source}: '{key}' must be text, got a {type(data[key]).__name__}")
    return Preset(str(data.get("name", Path(source).stem)), str(data.get("description", "")), rules)


def portable_space(name_or_path: str) -> str:
    """``name_or_path`` as a command run from another folder must give it: a built-in preset by its name, a YAML file by
    its absolute path (read as `load_preset` reads them)."""
    path = Path(name_or_path)
    if name_or_path in preset_names() or not (path.suffix in {".yaml", ".yml"} or path.exists()):
        return name_or_path
    return str(path.resolve())


def load_preset(name_or_path: str) -> Preset:
    """A built-in preset by name, or a YAML file by path. A built-in name (no folder, no suffix) is the preset even where
    the working folder holds a file or folder of that name (a run's output folder called ``default``, say)."""
    path = Path(name_or_path)
    if name_or_path in preset_names():
        text = resources.files(__name__).joinpath(f"{name_or_path}.yaml").read_text(encoding="utf-8")
        return parse_preset(text, f"{name_or_path}.yaml")
    if path.suffix in {".yaml", ".yml"} or path.exists():
        if path.is_dir():
            raise AutoqError(f"search-space file {name_or_path!r} is a folder; pass a YAML file or a built-in preset: {', '.join(preset_names())}")
        if not path.is_file():
            raise AutoqError(f"search-space file {name_or_path!r} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise AutoqError(f"search-space file {name_or_path!r} is not UTF-8 text; a search space is a YAML file") from None
        return parse_preset(text, str(path))
    raise AutoqError(f"unknown search space {name_or_path!r}; built-in presets: {', '.join(preset_names())}, or a path to a YAML file")


def check_against_layers(preset: Preset, layers: Sequence[LayerInfo], skipped: Sequence[str] = ()) -> None:
    """Refuse rules that govern no layer and group sizes at least as wide as every layer a rule governs.

    Each layer takes the first rule whose pattern matches it. A group at least as
    wide as a layer's input is per-channel on that layer (the space keeps it once);
    a group size that is so on *every* layer a targeted rule governs can never form a
    group there and is refused. A rule that matches every layer (a generic catch-all,
    also after targeted rules that take some) keeps the collapse silently, so generic
    presets work on narrow models.
    """
    taken: dict[int, list[LayerInfo]] = {i: [] for i in range(len(preset.rules))}
    for layer in layers:
        idx = preset.rule_for(layer.name)
        if idx is not None:
            taken[idx].append(layer)
    for i, rule in enumerate(preset.rules):
        governed = taken[i]
        if not governed:
            shadowed = any(re.search(rule.layers, layer.name) for layer in layers)
            left_out = [name for name in skipped if re.search(rule.layers, name)]
            why = ("every layer it matches is taken by an earlier rule" if shadowed else
                   f"the layers it matches, {', '.join(map(repr, left_out[:3]))}, are left out by the skip patterns" if left_out else
                   "it matches no quantizable layer")
            raise AutoqError(f"{rule.where('layers', i + 1)}: pattern {rule.layers!r} governs no layer ({why}); "
                             f"{name_examples([layer.name for layer in layers])}")
        widest = max(layer.in_features for layer in governed)
        if all(re.search(rule.layers, layer.name) for layer in layers):
            continue  # a catch-all rule (it matches every layer, earlier rules taking some) is generic: groups collapse
        for g in rule.granularity:
            size = parse_granularity(g, rule.where("granularity", i + 1))[1]
            if size is not None and size >= widest:  # one group of the whole input is per-channel
                raise AutoqError(
                    f"{rule.where('granularity', i + 1)}: group size {g} is impossible here: the widest layer this rule governs "
                    f"({max(governed, key=lambda layer: layer.in_features).name!r}) has only {widest} inputs, one group at most "
                    "(per-channel); use channel or a smaller group"
                )


def fewest_bits(preset: Preset, pins: Sequence[tuple[str, str]] = ()) -> int:
    """The fewest code bits a weight any option of ``preset`` (or a pinned choice) stores: every assignment of every model
    averages more (scales and zero points add to the codes). A pin that does not parse is left to its own check."""
    from autoq.choice import LayerChoice

    bits = [min(rule.bits + ((16,) if rule.half else ())) for rule in preset.rules]
    for _, choice in pins:
        try:
            bits.append(LayerChoice.from_name(choice).weight.bits)
        except AutoqError:
            continue
    return min(bits)


def check_bits_reachable(budget: Budget, preset: Preset, pins: Sequence[tuple[str, str]] = (), space: str = "") -> None:
    """Refuse a bits budget below `fewest_bits` before any model loads: no assignment of any model meets it (the model's
    exact feasible range is said once it loads)."""
    if budget.kind != "bits" or not preset.rules:
        return
    fewest = fewest_bits(preset, pins)
    exact = fewest == 16  # fp16 stores no scales: 16 bits is met exactly; an integer format's scales add to its codes
    if budget.value < fewest or (budget.value == fewest and not exact):
        codes, wanted = ("", f"of at least {fewest} bits") if exact else (" (codes alone: scales add more)", f"above {fewest} bits")
        raise AutoqError(f"budget {budget.text!r} is {'below' if budget.value < fewest else 'at'} {fewest} bits a weight, the fewest any "
                         f"option of the search space {space or preset.name!r} stores{codes}, so no assignment of any model meets "
                         f"it; give a budget {wanted} (a model's exact feasible range is said once it loads), or a space with fewer bits")
