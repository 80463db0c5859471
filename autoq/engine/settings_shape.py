"""The shape of the settings a search stores with its study (`autoq.engine.resume.stored_settings`), checked as they are
read back: the study's ``autoq.settings`` attribute is anyone's to set (Optuna's API, optuna-dashboard, a script), and
a value of another shape (pins as ``"none"``, the settings as a JSON string) crashed a resume in whatever code read it
first, or was blamed on a command-line option the user never passed."""

from __future__ import annotations

from typing import Any

from autoq.engine.study_names import SETTINGS_ATTR
from autoq.errors import AutoqError

_TEXT = ("model", "budget", "sampler", "strategy")
_TEXT_OR_NONE = ("model_source", "space", "device", "seed_from", "tracking_uri", "experiment", "mlflow_parent_run_id",
                 "data_fingerprint", "seed_table", "space_options", "latency_prices")
_WHOLE = ("seed", "batch", "n_trials", "max_retries", "n_fill_seeds")
_WHOLE_OR_NONE = ("max_uniform_seeds",)


def _kind_error(key: str, value: Any) -> str | None:
    """What ``value`` of setting ``key`` should have been, or ``None`` where it is of the shape autoq stores."""
    def is_whole(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def texts(v: Any) -> bool:
        return isinstance(v, list) and all(isinstance(i, str) for i in v)

    if key in _TEXT and not isinstance(value, str):
        return "a string"
    if key in _TEXT_OR_NONE and value is not None and not isinstance(value, str):
        return "a string or null"
    if key in _WHOLE and not is_whole(value):
        return "a whole number"
    if key in _WHOLE_OR_NONE and value is not None and not is_whole(value):
        return "a whole number or null"
    if key == "sequential" and not isinstance(value, bool):
        return "true or false"
    if key in ("skip", "plugins") and not texts(value):
        return "a list of strings"
    if key == "pins" and not (isinstance(value, list) and all(texts(p) and len(p) == 2 for p in value)):
        return "a list of [layer pattern, choice] pairs"
    if key == "plugin_code" and not (isinstance(value, dict) and all(isinstance(v, str) for v in value.values())):
        return "an object of plug-in names to digests"
    return None


def checked_settings(stored: Any, study_name: str) -> dict[str, Any]:
    """``stored`` (the study's ``autoq.settings``) as a dict, or the error naming the setting whose shape is not autoq's."""
    restore = "put back what autoq stored there, or start a new search (another --study-name)"
    if not isinstance(stored, dict):
        raise AutoqError(f"search {study_name!r} cannot be read back: its study's {SETTINGS_ATTR!r} attribute is a "
                         f"{type(stored).__name__}, where autoq stores an object of settings (edited since); {restore}")
    wrong = [f"{key!r} is {stored[key]!r} (autoq stores {kind})" for key in stored
             if (kind := _kind_error(key, stored[key])) is not None]
    if wrong:
        raise AutoqError(f"search {study_name!r} cannot be read back: in its study's {SETTINGS_ATTR!r} attribute, "
                         f"{'; '.join(wrong)} (edited since); {restore}")
    return dict(stored)
