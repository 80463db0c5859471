"""`SensitivityTable`: one metric's score for every (layer, option), with what it cost.

Higher scores mean more damage when that layer alone takes that option. A table
records the model hash and data fingerprint it was computed from, so a table from
another model is refused instead of silently seeding the wrong search. It round-trips
through JSON (everything) and CSV (metadata in ``# key: value`` header lines).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoq.errors import AutoqError
from autoq.files import parse_json, write_atomic, write_text_atomic

TABLE_FORMAT = "autoq.sensitivity"
TABLE_VERSION = 1
_CSV_COLUMNS = ("layer", "option", "score", "stderr")


@dataclass(frozen=True)
class Entry:
    """Score of one layer at one option (a `LayerChoice` name); ``stderr`` where the metric estimates one."""

    layer: str
    option: str
    score: float
    stderr: float | None = None

    def __post_init__(self) -> None:
        """A plug-in's numpy scalars as Python floats: ``np.float32`` stopped the JSON cache write after the whole
        metric had run, and the CSV wrote ``np.float64(0.25)``, which it then could not read back."""
        for name in ("score", "stderr"):
            value = getattr(self, name)
            if isinstance(value, numbers.Real) and type(value) is not float:
                object.__setattr__(self, name, float(value))


@dataclass(frozen=True)
class SensitivityTable:
    """Scores over (layer, option) for one metric, model and calibration set."""

    metric: str
    model_hash: str
    data_fingerprint: str
    entries: tuple[Entry, ...]
    seconds: float
    model_name: str = ""
    params: tuple[tuple[str, str], ...] = ()  # metric settings that change the numbers (samples, tolerance, ...)
    layer_stats: tuple[tuple[str, tuple[tuple[str, float], ...]], ...] = ()  # e.g. Hessian trace per layer
    notes: tuple[str, ...] = ()  # the metric's warnings on these numbers (an estimate stopped short of its tolerance)
    # read from the sensitivity cache rather than computed by this call; not saved: said of this object, not of the scores
    from_cache: bool = field(default=False, compare=False)
    _index: dict = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        index = {(e.layer, e.option): e for e in self.entries}
        if len(index) != len(self.entries):
            raise AutoqError("a sensitivity table lists the same (layer, option) twice")
        self._index.update(index)

    def __repr__(self) -> str:
        """Short, for a notebook or a log: the metric, the model, the table's shape and where it came from (the
        dataclass's repr printed every entry: 64 kB for MiniLM's table, 227 kB for a model of 300 layers)."""
        return (f"SensitivityTable(metric={self.metric!r}, model={self.model_name or self.model_hash!r}, layers={len(self.layers)}, "
                f"options={len(self.options)}, entries={len(self.entries)}, seconds={self.seconds:.3g}, from_cache={self.from_cache})")

    @property
    def layers(self) -> list[str]:
        return list(dict.fromkeys(e.layer for e in self.entries))

    @property
    def options(self) -> list[str]:
        """Every option name in the table, in first-seen order."""
        return list(dict.fromkeys(e.option for e in self.entries))

    def entry(self, layer: str, option: str) -> Entry:
        try:
            return self._index[(layer, option)]
        except KeyError:
            missing = "" if any(e.layer == layer for e in self.entries) else f" (it has no layer {layer!r} at all: computed with --skip?)"
            raise AutoqError(f"the {self.metric} sensitivity table has no score for layer {layer!r} at {option!r}{missing}; recompute it "
                             "for this search space (autoq sensitivity with the search's --space and --skip)") from None

    def has(self, layer: str, option: str) -> bool:
        """Whether the table scores ``layer`` at ``option``."""
        return (layer, option) in self._index

    def scores_digest(self) -> str:
        """A digest of what the table says: its metric, model and every score. Two tables of one digest seed a search
        alike (a resume checks that a table file is still the one its search was seeded from)."""
        text = json.dumps([self.metric, self.model_hash, sorted((e.layer, e.option, e.score) for e in self.entries)])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def score(self, layer: str, option: str) -> float:
        return self.entry(layer, option).score

    def stats(self, layer: str) -> dict[str, float]:
        return dict(dict(self.layer_stats).get(layer, ()))

    def check_model(self, model_hash: str, model_name: str = "") -> None:
        """Refuse to use this table for a model with different weights."""
        if model_hash != self.model_hash:
            this = f" ({model_name})" if model_name else ""
            raise AutoqError(
                f"this {self.metric} sensitivity table was computed for model {self.model_hash} ({self.model_name or 'unnamed'}), "
                f"not for this model {model_hash}{this}; compute one for this model with `autoq sensitivity --metric {self.metric} --model ...`"
            )

    # ---- serialisation -------------------------------------------------------------------------
    def _meta(self) -> dict:
        return {
            "format": TABLE_FORMAT, "version": TABLE_VERSION, "metric": self.metric, "model_name": self.model_name,
            "model_hash": self.model_hash, "data_fingerprint": self.data_fingerprint, "seconds": self.seconds,
            # a statistic that is not finite (one iteration's standard error: inf) is left out: JSON has no such number,
            # and jq or a browser refused the file Python wrote with 'Infinity' in it
            "params": dict(self.params), "layer_stats": {layer: {k: v for k, v in stats if math.isfinite(v)} for layer, stats in self.layer_stats},
            **({"notes": list(self.notes)} if self.notes else {}),
        }

    @classmethod
    def _from_meta(cls, meta: Mapping, entries: tuple[Entry, ...]) -> SensitivityTable:
        """A table from what `_meta` wrote (JSON's top level or CSV's comment lines) and its entries."""
        missing = [key for key in ("metric", "model_hash", "data_fingerprint", "seconds") if key not in meta]
        if missing:
            raise AutoqError(f"the sensitivity table has no {', '.join(map(repr, missing))}; `autoq sensitivity` writes every field")
        try:
            stats = tuple((str(layer), tuple((str(k), float(v)) for k, v in s.items()))
                          for layer, s in meta.get("layer_stats", {}).items())
            return cls(
                str(meta["metric"]), str(meta["model_hash"]), str(meta["data_fingerprint"]), entries, float(meta["seconds"]),
                str(meta.get("model_name", "")), tuple((str(k), str(v)) for k, v in meta.get("params", {}).items()), stats,
                tuple(str(note) for note in meta.get("notes", ())),
            )
        except AutoqError:
            raise
        except (AttributeError, TypeError, ValueError) as exc:
            raise AutoqError(f"the sensitivity table's metadata cannot be read ({exc}); `autoq sensitivity` writes it anew") from None

    def to_json(self) -> str:
        data = self._meta()
        data["entries"] = [[e.layer, e.option, e.score, _known(e.stderr)] for e in self.entries]
        return json.dumps(data, indent=1, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> SensitivityTable:
        data = parse_json(text, "sensitivity table")
        _check_meta(data)
        rows = data.get("entries")
        if not isinstance(rows, list):
            raise AutoqError("the sensitivity table has no 'entries' list of [layer, option, score, stderr] rows")
        return cls._from_meta(data, tuple(_entry(n, row) for n, row in enumerate(rows, 1)))

    def to_csv(self) -> str:
        out = io.StringIO()
        for key, value in {**self._meta(), "entries": len(self.entries)}.items():  # the count: a file cut short is told apart
            out.write(f"# {key}: {json.dumps(value)}\n")
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(_CSV_COLUMNS)
        for e in self.entries:
            writer.writerow([e.layer, e.option, repr(e.score), "" if _known(e.stderr) is None else repr(e.stderr)])
        return out.getvalue()

    @classmethod
    def from_csv(cls, text: str) -> SensitivityTable:
        lines = text.splitlines()
        meta: dict = {}
        body = []
        for number, line in enumerate(lines, 1):
            if line.startswith("# ") and ": " in line:
                key, _, value = line[2:].partition(": ")
                try:
                    meta[key] = json.loads(value)
                except (json.JSONDecodeError, RecursionError):
                    raise AutoqError(f"line {number} of the sensitivity table, '# {key}: ...', does not hold a JSON value") from None
            elif line.strip():
                body.append(line)
        _check_meta(meta)
        reader = csv.DictReader(body, skipinitialspace=True)  # 'layer, option, ...' as a hand edit may space it
        missing = [c for c in _CSV_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise AutoqError(f"the sensitivity table has no column {', '.join(map(repr, missing))}: its header is "
                             f"{','.join(reader.fieldnames or ()) or 'empty'!r}, where autoq writes {','.join(_CSV_COLUMNS)!r}")
        rows = [[r["layer"], r["option"], r["score"], r["stderr"] or None] for r in reader]
        finished = text.endswith("\n")
        if "entries" in meta and meta["entries"] == len(rows) and not finished:  # an editor may drop the last newline
            raise AutoqError(f"the sensitivity table's last row (row {len(rows)} of its {len(rows)}) has no line ending, so it may be "
                             "cut short (a score cut short still reads as a number); compute it again (autoq sensitivity), or, if "
                             "you edited it by hand and that row is whole, end the file with a newline")
        if "entries" in meta and (meta["entries"] != len(rows) or not finished):  # a table written before has no count
            raise AutoqError(f"the sensitivity table is cut short: it holds {len(rows)} of its {meta['entries']} rows"
                             f"{'' if finished else ', the last one unfinished'}; compute it again (autoq sensitivity), or, if you "
                             "edited its rows by hand, make its '# entries:' line say how many it holds (or delete that line)")
        return cls._from_meta(meta, tuple(_entry(n, row) for n, row in enumerate(rows, 1)))

    def save(self, path: str | Path) -> Path:
        """Write JSON or CSV, chosen by the file extension, whole or not at all (a killed run leaves no half table)."""
        path = Path(path)
        return write_text_atomic(path, self.to_csv() if path.suffix.lower() == ".csv" else self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> SensitivityTable:
        path = Path(path)
        if path.is_dir():
            raise AutoqError(f"sensitivity table {str(path)!r} is a folder; pass a table file in it (DIR/<model>-<metric>.json, which "
                             "`autoq sensitivity --out DIR` writes with its .csv, and prints the search that reads it)")
        if not path.is_file():
            raise AutoqError(f"sensitivity table {str(path)!r} does not exist; `autoq sensitivity --metric METRIC --out DIR` writes "
                             "DIR/<model>-<metric>.json (<model>-<space>-<metric>.json with --space) and .csv, and prints the search that reads it")
        try:
            text = path.read_text(encoding="utf-8")
            return cls.from_csv(text) if path.suffix.lower() == ".csv" else cls.from_json(text)
        except UnicodeDecodeError:
            raise AutoqError(f"sensitivity table {str(path)!r} is not UTF-8 text; `autoq sensitivity` writes JSON or CSV") from None
        except AutoqError as exc:
            raise AutoqError(f"{path}: {exc}") from None

    def heat_grid(self) -> tuple[list[str], Any, tuple[float, float]]:
        """What :meth:`heatmap` draws: the options in column order (fp16 last), a layers x options array of log10(score)
        (NaN where not scored; a score of 0 or less, as an unused layer or a negative trace estimate gives, below the
        colour range, so that it is not drawn as blank as a missing one), and that colour range."""
        import numpy as np

        options = [o for o in self.options if o != "fp16"] + [o for o in self.options if o == "fp16"]
        grid = np.full((len(self.layers), len(options)), np.nan)
        logs = [math.log10(e.score) for e in self.entries if e.score > 0]
        low, high = min(logs, default=0.0), max(logs, default=1.0)
        for e in self.entries:
            grid[self.layers.index(e.layer), options.index(e.option)] = math.log10(e.score) if e.score > 0 else low - 1
        return options, grid, (low, high if high > low else low + 1.0)

    def heatmap(self, path: str | Path, title: str | None = None) -> Path:
        """Layers x options heat map of log10(score) as a PNG.

        On a bare ``Figure``: no pyplot state, and the caller's matplotlib backend (a notebook's, say) is left as it was."""
        import matplotlib
        from matplotlib.figure import Figure

        layers = self.layers
        options, grid, (low, high) = self.heat_grid()
        # tall enough for the colour bar's label beside a few layers (digits-cnn's 4 cut it off)
        fig = Figure(figsize=(2 + 0.45 * len(options), max(3.6, 1.5 + 0.18 * len(layers))), dpi=110)
        ax = fig.subplots()
        cmap = matplotlib.colormaps["viridis"].with_extremes(under="black", bad="white")
        im = ax.imshow(grid, aspect="auto", cmap=cmap, interpolation="nearest", vmin=low, vmax=high)
        ax.set_xticks(range(len(options)), [o.replace(":", "\n") for o in options], rotation=90, fontsize=6)
        ax.set_yticks(range(len(layers)), layers, fontsize=max(3, min(7, 600 // max(1, len(layers)))))
        fig.colorbar(im, ax=ax, extend="min").set_label(
            f"log10 {self.metric} score (higher = more sensitive)\nblack: 0 or less; blank: not scored", fontsize=7)
        ax.set_title(title or f"{self.metric} sensitivity: {self.model_name or self.model_hash}", fontsize=9)
        fig.tight_layout()
        return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))  # a disk that fills leaves no half picture


def _known(stderr: float | None) -> float | None:
    """A standard error as a table file writes it: ``None`` (JSON's null, CSV's empty cell) where it is not finite,
    one sample's ``inf`` or ``inf`` times no change's ``nan``, which says no more than that it is unknown."""
    return stderr if stderr is not None and math.isfinite(stderr) else None


def _entry(number: int, row: object) -> Entry:
    """Entry ``number`` (1-based) from its ``[layer, option, score, stderr]`` row, refusing what no metric writes: a score
    that is not a finite number (the seeding solvers take it as is), a negative stderr."""
    try:
        layer, option, score, stderr = row  # type: ignore[misc]
        entry = Entry(str(layer), str(option), float(score), None if stderr is None else float(stderr))
    except (TypeError, ValueError):
        raise AutoqError(f"entry {number} of the sensitivity table, {row!r}, is not [layer, option, score, stderr] with "
                         "numbers for the score and stderr (stderr may be empty)") from None
    # a stderr may be inf (one sample) or nan (inf times a zero change): only a negative one is not a metric's
    if not math.isfinite(entry.score) or (entry.stderr is not None and entry.stderr < 0):
        raise AutoqError(f"entry {number} of the sensitivity table ({entry.layer}, {entry.option}) has score {entry.score} and "
                         f"stderr {entry.stderr}; a score is a finite number and a stderr is not negative")
    return entry


def _check_meta(data: Mapping) -> None:
    if not isinstance(data, Mapping) or data.get("format") != TABLE_FORMAT:
        raise AutoqError(f"not an autoq sensitivity table (missing 'format': '{TABLE_FORMAT}')")
    if data.get("version") != TABLE_VERSION:
        raise AutoqError(f"sensitivity table version {data.get('version')} is not supported (expected {TABLE_VERSION})")


def layer_scores(table: SensitivityTable, layers: Sequence[str], option: str) -> list[float]:
    """One score per layer at ``option`` (a column of the table), for rankings."""
    return [table.score(layer, option) for layer in layers]
