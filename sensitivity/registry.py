"""Registry of sensitivity metrics: ``name -> MetricInfo`` (function plus default settings).

A metric is ``fn(inputs, settings, progress) -> MetricOutput``: one `Entry` per
(layer, option) of ``inputs`` and optional per-layer statistics (a Hessian trace
and its standard error). ``settings`` are the metric's defaults updated by the
caller; they are part of the cache key, so a table computed with other settings
is never reused.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from autoq.errors import AutoqError
from autoq.registry import Registry, check_callable
from autoq.sensitivity.inputs import Inputs
from autoq.sensitivity.table import Entry


@dataclass(frozen=True)
class MetricOutput:
    """What a metric returns: one `Entry` (layer, option, score, standard error) per option it scored, and optional
    per-layer statistics (``{"hessian_trace": {"layer": value}, ...}``) and notes that the table stores beside them."""

    entries: tuple[Entry, ...]
    layer_stats: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # warnings on these numbers: the table keeps them, and they are shown wherever it is read


MetricFn = Callable[[Inputs, Mapping[str, Any], Any], MetricOutput]


@dataclass(frozen=True)
class MetricInfo:
    """A registered metric: its name (``--metric``, ``--seed-from``), function, read-only default settings, one-line
    description, what its progress bar counts, and the values a setting of a few named ones may take."""

    name: str
    fn: MetricFn
    defaults: Mapping[str, Any]
    description: str
    steps: str = "layers"  # progress-bar length: "layers", or the name of a setting (e.g. max_iter)
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # setting -> its allowed values (output_kind, probe)

    def n_steps(self, inputs: Inputs, settings: Mapping[str, Any]) -> int:
        return len(inputs.layers) if self.steps == "layers" else int(settings[self.steps])


_METRICS: Registry[MetricInfo] = Registry(
    "sensitivity metric", reserved=("auto", "none"),  # --seed-from's words
    hint=" (a plug-in's metric is known once its module is imported: --plugin MODULE on the command line)",
)


def register_metric(name: str, description: str, steps: str = "layers", choices: Mapping[str, Sequence[str]] | None = None,
                    **defaults: Any) -> Callable[[MetricFn], MetricFn]:
    """Decorator: make a metric available under ``name`` with default ``settings``. ``choices`` names the values a
    setting may take (``{"output_kind": ("auto", "logits", "real")}``), checked with the others before any work starts."""
    allowed = {key: tuple(values) for key, values in (choices or {}).items()}
    for key, values in allowed.items():
        if key not in defaults or defaults[key] not in values:
            raise ValueError(f"sensitivity metric {name!r}: choices for {key!r} need a default among them ({key}={values[0]!r}, say)")

    def info(fn: MetricFn) -> MetricInfo:
        check_callable("sensitivity metric", name, fn, ("inputs", "settings", "progress"))
        return MetricInfo(name, fn, MappingProxyType(dict(defaults)), description, steps, MappingProxyType(allowed))

    add = _METRICS.decorator(name, info)  # checks the name
    if name.lower().endswith((".json", ".csv")):
        raise ValueError(f"cannot register sensitivity metric {name!r}: --seed-from reads a name ending in .json or .csv as a table file")
    if steps != "layers" and steps not in defaults:  # the bar's length is read from that setting: a KeyError once it ran
        raise ValueError(f"sensitivity metric {name!r}: steps={steps!r} names none of its settings ({', '.join(defaults) or 'it has none'}); "
                         "pass steps='layers' or the name of a setting given as a keyword (max_iter=40)")
    return add


def get_metric(name: str) -> MetricInfo:
    """The registered metric ``name``, or an error listing the known ones."""
    return _METRICS.get(name)


def metric_names() -> list[str]:
    """Every registered metric's name, in registration order (the built-ins first)."""
    return _METRICS.names()


def resolve_settings(info: MetricInfo, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The metric's defaults updated by ``overrides``; an unknown setting is an error that lists the known ones."""
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(info.defaults)
    if unknown:
        raise AutoqError(f"unknown setting(s) {sorted(unknown)} for sensitivity metric {info.name!r}; known: {sorted(info.defaults)}")
    for key, value in overrides.items():
        _check_setting(info.name, key, value, info.defaults[key])
        overrides[key] = _plain(value, info.defaults[key])
        if key in info.choices and value not in info.choices[key]:  # it failed after the model loaded, naming no setting
            raise AutoqError(f"setting {key}={value!r} of sensitivity metric {info.name!r} must be one of {', '.join(info.choices[key])}")
    settings = {**info.defaults, **overrides}
    # a min_iter asked for above max_iter stopped at max_iter without a word; a max_iter lowered alone caps the default min_iter
    if "min_iter" in overrides and isinstance(settings.get("max_iter"), int) and settings["min_iter"] > settings["max_iter"]:
        raise AutoqError(f"setting min_iter={settings['min_iter']} of sensitivity metric {info.name!r} is above max_iter={settings['max_iter']}; "
                         f"raise max_iter (--set max_iter={settings['min_iter']}) or "
                         + (f"lower min_iter (at least {LEAST['min_iter']})" if settings["max_iter"] >= LEAST["min_iter"] else "leave min_iter out"))
    return settings


NONE_MEANS_ALL = ("n_samples", "rows_per_batch")  # None: every calibration row, batches as they come
LEAST = {"seed": 0, "min_iter": 2}  # a count's least value where not 1 (one iteration estimates no standard error: it ran 2)


def _plain(value: Any, default: Any) -> Any:
    """A checked number as its default's Python kind: numpy's int64(8) an int, 1 a float where the default is 0.05 (a
    table is keyed and recorded by the repr: tol=1 and tol=1.0, or np.float64(0.5) and 0.5, computed it twice)."""
    if value is None or isinstance(default, (bool, str)):
        return value
    return int(value) if isinstance(default, int) else float(value) if isinstance(default, float) else value


def _check_setting(metric: str, key: str, value: Any, default: Any) -> None:
    """A setting has its default's kind: a count a whole number (at least 1; a seed at least 0), a tolerance a positive
    number, a name a string. A wrong one failed deep in the metric (a TypeError, an IndexError) or was taken as is."""
    what = f"setting {key}={value!r} of sensitivity metric {metric!r}"
    if value is None and key in NONE_MEANS_ALL:
        return
    if isinstance(default, bool) or isinstance(default, str):
        if type(value) is not type(default):
            raise AutoqError(f"{what} must be a {type(default).__name__} like its default {default!r}")
    elif isinstance(default, int):
        least = LEAST.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:  # numpy's integers too
            none = " (or none: all)" if key in NONE_MEANS_ALL else ""
            written = f"; write it as {int(value)}" if isinstance(value, float) and value.is_integer() and value >= least else ""
            raise AutoqError(f"{what} must be a whole number of at least {least}{none}, like its default {default!r}{written}")
        if key == "seed" and value >= 2**32:  # torch's generator overflowed on it after the model had loaded
            raise AutoqError(f"{what} must be an integer from 0 to 2**32 - 1 (as a search's --seed), like its default {default!r}")
    elif isinstance(default, float) and (isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0):
        raise AutoqError(f"{what} must be a positive number, like its default {default!r}")
