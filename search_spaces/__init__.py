"""Search-space presets (YAML files in this folder) and their loader.

A preset is a list of rules; each layer takes the first rule whose ``layers``
regex matches its name. A rule lists the bit-widths, granularities
(``tensor``, ``channel``, ``g32``, ``g64``, ``g128``), symmetry and PTQ methods
allowed, and whether fp16 ("kept in half precision") is an option.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from autoq.errors import AutoqError
from autoq.model import compile_patterns

_RULE_KEYS = {"layers", "bits", "granularity", "symmetric", "methods", "half"}
_PRESET_KEYS = {"name", "description", "rules"}


@dataclass(frozen=True)
class Rule:
    layers: str
    bits: tuple[int, ...]
    granularity: tuple[str, ...]
    symmetric: tuple[bool, ...]
    methods: tuple[str, ...]
    half: bool


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    rules: tuple[Rule, ...]


def preset_names() -> list[str]:
    return sorted(p.name[: -len(".yaml")] for p in resources.files(__name__).iterdir() if p.name.endswith(".yaml"))


def _as_tuple(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def _rule(raw: Any, where: str) -> Rule:
    if not isinstance(raw, dict):
        raise AutoqError(f"{where}: a rule must be a mapping with keys {sorted(_RULE_KEYS)}")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise AutoqError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_RULE_KEYS)}")
    missing = {"bits", "granularity", "methods"} - set(raw)
    if missing:
        raise AutoqError(f"{where}: missing key(s) {sorted(missing)}")
    bits = _as_tuple(raw["bits"])
    symmetric = _as_tuple(raw.get("symmetric", False))
    if not all(isinstance(b, int) and not isinstance(b, bool) for b in bits):
        raise AutoqError(f"{where}: 'bits' must be integers such as [2, 3, 4, 8], got {raw['bits']!r}")
    if not all(isinstance(s, bool) for s in symmetric) or not isinstance(raw.get("half", False), bool):
        raise AutoqError(f"{where}: 'symmetric' and 'half' take true or false (unquoted)")
    layers = str(raw.get("layers", ".*"))
    try:
        compile_patterns([layers], "'layers'")
    except AutoqError as exc:
        raise AutoqError(f"{where}: {exc}") from None
    return Rule(
        layers=layers,
        bits=tuple(bits),
        granularity=tuple(str(g) for g in _as_tuple(raw["granularity"])),
        symmetric=tuple(symmetric),
        methods=tuple(str(m) for m in _as_tuple(raw["methods"])),
        half=raw.get("half", False),
    )


def parse_preset(text: str, source: str) -> Preset:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AutoqError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or "rules" not in data:
        raise AutoqError(f"{source}: a search space needs a top-level 'rules' list")
    unknown = set(data) - _PRESET_KEYS
    if unknown:
        raise AutoqError(f"{source}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_PRESET_KEYS)}")
    if not isinstance(data["rules"], list):
        raise AutoqError(f"{source}: 'rules' must be a list of rules")
    rules = tuple(_rule(r, f"{source}, rule {i + 1}") for i, r in enumerate(data["rules"]))
    if not rules:
        raise AutoqError(f"{source}: 'rules' is empty")
    return Preset(str(data.get("name", Path(source).stem)), str(data.get("description", "")), rules)


def load_preset(name_or_path: str) -> Preset:
    """A built-in preset by name, or a YAML file by path."""
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        if not path.is_file():
            raise AutoqError(f"search-space file {name_or_path!r} does not exist")
        return parse_preset(path.read_text(), str(path))
    if name_or_path not in preset_names():
        raise AutoqError(f"unknown search space {name_or_path!r}; built-in presets: {', '.join(preset_names())}, or a path to a YAML file")
    text = resources.files(__name__).joinpath(f"{name_or_path}.yaml").read_text()
    return parse_preset(text, f"{name_or_path}.yaml")
