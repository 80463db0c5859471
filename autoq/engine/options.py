"""The kinds of `SearchConfig`'s options, checked before anything is loaded.

A pipeline passes options from its own config (strings from YAML, floats from a tuner, numpy integers): a wrong
kind used to fail late and deep (``n_trials=2.5`` in the ILP after the sensitivity table, ``skip=3`` as
"'int' object is not iterable"), or not at all (``progress="no"`` read as true).
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable, Mapping
from typing import Any

from autoq.errors import AutoqError

WHOLE = {"n_trials": 1, "batch": 1, "workers": 1, "max_retries": 0, "n_fill_seeds": 0, "max_uniform_seeds": 0}  # least value
OPTIONAL = {"max_uniform_seeds"}  # None: no limit
# greatest value: a batch of 10**310 rows overflowed the roofline's float (a traceback after the model loaded); the
# kernels index a launch's rows in 32 bits
MOST = {"batch": 2**31 - 1}
LABELS = {"batch": "batch (--batch: rows of activations per forward, for latency)"}
ON_COMMAND_LINE = {"n_trials", "workers", "max_retries", "timeout", "seed", "cpus_per_trial", "gpus_per_trial"}
FLAGS = ("progress", "resume", "sequential")


# what None means for an option whose empty string is refused (the default, unless said here): seed_from=None is no
# table, where its default 'auto' seeds from one, and "None for the default" turned the seeding off
_NONE_MEANS = {"seed_from": "'auto' for the default (a sensitivity table), None for no table (random budget-filling seeds)",
               "mlflow_parent_run_id": "None for no parent"}


def label(name: str) -> str:
    """An option as its errors name it: the Python name, and the flag where ``autoq search`` has one, since the API and
    the command line share the checks (``n_trials (--n-trials)``)."""
    if name in LABELS:
        return LABELS[name]
    return f"{name} (--{name.replace('_', '-')})" if name in ON_COMMAND_LINE else name


def whole(name: str, value: Any, least: int, optional: bool = False) -> int | None:
    """``value`` as an int of at least ``least`` (a numpy integer too; not a bool, a float or a string)."""
    if value is None and optional:
        return None
    named = label(name)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise AutoqError(f"{named} must be a whole number (at least {least}), got {type(value).__name__} {value!r}")
    if value < least:
        raise AutoqError(f"{named} must be {'0 or more' if least == 0 else f'at least {least}'}, got {value}")
    if name in MOST and value > MOST[name]:
        shown = f"{value}" if value < 10**30 else f"a number of {len(str(value))} digits"
        raise AutoqError(f"{named} must be at most {MOST[name]} (2**31 - 1), got {shown}")
    return int(value)


def checked_options(config: Any) -> dict[str, Any]:
    """The options of ``config`` whose kind is checked, normalised (ints, bools, tuples), to set back on it."""
    out: dict[str, Any] = {name: whole(name, getattr(config, name), least, name in OPTIONAL) for name, least in WHOLE.items()}
    for name in FLAGS:
        value = getattr(config, name)
        if type(value).__name__ not in ("bool", "bool_"):  # numpy's too
            raise AutoqError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
        out[name] = bool(value)
    for name, what in (("timeout", "a number of seconds (or None: no limit)"), ("cpus_per_trial", "a number of CPUs"),
                       ("gpus_per_trial", "a number of GPUs (0: none)")):
        value = getattr(config, name)
        if value is None and name == "timeout":
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise AutoqError(f"{label(name)} must be {what}, got {type(value).__name__} {value!r}")
        out[name] = float(value)
    for name in ("seed_from", "device", "space"):  # files may be given as paths, as a model is
        if isinstance(getattr(config, name), os.PathLike):
            out[name] = os.fspath(getattr(config, name))
    for name in ("seed_from", "device", "study_name", "address", "mlflow_parent_run_id"):
        value = out.get(name, getattr(config, name))
        if value is not None and not isinstance(value, str):
            raise AutoqError(f"{name} must be a str (or None), got {type(value).__name__} {value!r}")
        if value is not None and not value.strip():  # '' was read as None: a new search for study_name='' of a resume
            raise AutoqError(f"{name} is {value!r}: give one, or {_NONE_MEANS.get(name, 'None for the default')}")
        if name == "study_name" and value is not None and "'" in value and '"' in value and config.tracking_uri is not None:
            raise AutoqError(f"study_name {value!r} holds both a single and a double quote, and MLflow's filters could not find its "
                             "runs by it (autoq pareto, export by name); keep one kind of quote")
    for name, optional in (("space", False), ("experiment", False), ("tracking_uri", True)):  # storage: resume._check_storage_url
        value = out.get(name, getattr(config, name))
        if not (isinstance(value, str) and value.strip()) and not (optional and value is None):
            raise AutoqError(f"{name} must be a non-empty str{' (or None)' if optional else ''}, got {type(value).__name__} {value!r}")
    out["skip"] = _patterns(config.skip)
    out["pins"] = _pins(config.pins)
    plugins = (config.plugins,) if isinstance(config.plugins, str) else config.plugins
    if not isinstance(plugins, (list, tuple)) or not all(isinstance(p, str) and p for p in plugins):
        raise AutoqError(f"plugins must be module names or .py files (str), got {config.plugins!r}")
    out["plugins"] = tuple(plugins)
    return out


def _patterns(skip: Any) -> tuple[str, ...]:
    """One pattern or a sequence of them: a string is one pattern, not its letters."""
    items = (skip,) if isinstance(skip, str) else skip
    try:
        items = tuple(items)
    except TypeError:
        raise AutoqError(f"skip must be a regular expression or a list of them, got {type(skip).__name__} {skip!r}") from None
    bad = [p for p in items if not isinstance(p, str)]
    if bad:
        raise AutoqError(f"skip must be a regular expression or a list of them; {bad[0]!r} is a {type(bad[0]).__name__}")
    from autoq.model.layers import compile_patterns

    compile_patterns(items, "skip")  # a typo ('*') refused before the model loads (minutes for a Hugging Face model)
    return items


def _pins(pins: Any) -> tuple[tuple[str, str], ...]:
    """``{pattern: choice}``, ``(pattern, choice)`` pairs, or the command line's ``"pattern=choice"`` strings."""
    if isinstance(pins, Mapping):
        pairs = list(pins.items())
    elif isinstance(pins, str):
        pairs = [pins]
    else:
        try:
            pairs = list(pins)
        except TypeError:
            raise AutoqError(f"pins must be a mapping {{pattern: choice}}, got {type(pins).__name__} {pins!r}") from None
    out = []
    for item in pairs:
        if isinstance(item, str):
            item = next(iter(pins_from_strings([item]).items()))
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(x, str) for x in item)):
            raise AutoqError(f"pins must be a mapping {{pattern: choice}} such as {{'pooler': 'fp16'}}, or 'pattern=choice' "
                             f"strings; got {item!r}")
        out.append((item[0], item[1]))
    pins_from_strings(f"{pattern}={choice}" for pattern, choice in out)  # one pattern pinned to two choices: as the CLI refuses it
    from autoq.model.layers import compile_patterns

    compile_patterns([pattern for pattern, _ in out], "pin")  # before the model loads, as its choice is
    return tuple(out)


def pins_from_strings(items: Iterable[str]) -> Mapping[str, str]:
    """``["pattern=choice", ...]`` -> ``{pattern: choice}``, for the CLI's ``--pin``."""
    pins = {}
    for item in items:
        pattern, sep, choice = item.rpartition("=")
        if not sep or not pattern or not choice:
            raise AutoqError(f"cannot parse pin {item!r}; expected PATTERN=CHOICE such as 'pooler=fp16' or 'attention.output.dense=int8-ch-asym:rtn-mse'")
        if pins.get(pattern, choice) != choice:
            raise AutoqError(f"pattern {pattern!r} is pinned twice, to {pins[pattern]!r} and to {choice!r}; pin it once")
        pins[pattern] = choice
    return pins
