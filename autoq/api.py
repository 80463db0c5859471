"""The Python API: ``autoq.search(model, calibration, evaluate, budget=...)``."""

from __future__ import annotations

import math
import numbers
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields, replace
from typing import Any

from torch import nn

from autoq.budget import DEFAULT_BUDGET, Budget
from autoq.builtin import load_workload
from autoq.builtin.workload import Workload
from autoq.engine import SearchConfig, SearchResult, run_search
from autoq.engine.options import pins_from_strings  # noqa: F401  (the CLI's --pin, here since before)
from autoq.engine.runner import check_tracking
from autoq.errors import AutoqError
from autoq.evaluate import OutputFidelity
from autoq.evaluate.fidelity import check_finite_batches, user_batches
from autoq.fingerprints import data_fingerprint, model_hash
from autoq.messages import note
from autoq.model import check_has_values, uncompiled
from autoq.tracking.active_run import active_parent

_CONFIG_FIELDS = {f.name for f in fields(SearchConfig)}
_STORED_COUNTS = ("n_trials", "max_retries")  # what a Python resume takes from the stored search unless given (as the CLI)


def search(
    model: nn.Module | str | os.PathLike[str] | None = None,
    calibration: Iterable[Any] | None = None,
    evaluate: Callable[[nn.Module], float] | None = None,
    budget: str | float | Budget | None = None,
    *,
    name: str | None = None,
    holdout: float | None = None,
    metric: str | None = None,
    config: SearchConfig | None = None,
    **options: Any,
) -> SearchResult:
    """Find per-layer quantization choices for ``model`` within ``budget`` (``None``: ``"4.5bits"``, or a resumed
    search's own, as ``autoq search --resume`` takes it).

    ``model`` is an ``nn.Module`` (with ``calibration``: a sequence of batches, each a
    tensor, a tuple of positional inputs or a dict of keyword inputs), or the name
    of a built-in (``"minilm"``, ``"digits-cnn"``) or a local Hugging Face directory (str or path).
    ``evaluate(model) -> float`` is your quality metric, higher is better; without it
    the last ``holdout`` fraction (0.25 if None) of the calibration batches is held out and quality
    is the mean cosine similarity of the outputs to the unquantized model's. ``name`` and ``metric`` label
    your module's search in the summary and MLflow; built-ins and folders bring their own data, metric and name.
    ``options`` are the fields of :class:`autoq.engine.SearchConfig` (``n_trials``,
    ``seed``, ``space``, ``skip``, ``pins``, ``tracking_uri``, ``storage``, ...), the
    scale-out and recovery ones included (``backend="ray"``, ``workers``, ``address``,
    ``max_retries``, ``resume=True`` with ``study_name``). ``config``: a :class:`SearchConfig` of them, kept in a pipeline
    (the ``TrainingArguments`` habit); the fields it sets away from their defaults apply, and keywords given beside it
    win (``dataclasses.asdict(config)`` splatted passed every default too: ``mlflow_parent_run_id=None`` among them, which
    turned the nesting in an active run off). Called inside ``with mlflow.start_run():``, the search's run
    nests in the active run, where that is in the same store (``mlflow_parent_run_id=None`` not to). No global state is kept and Ray
    is started (and stopped) only for ``backend="ray"`` when none is running.
    The model's weights and train/eval modes are left as they were; use ``result.apply(model)``. The result
    pickles, compares, and reloads with ``SearchResult.from_mlflow(run_id, tracking_uri)``.
    """
    defaulted: dict[str, Any] = {}
    if config is not None:
        if not isinstance(config, SearchConfig):
            raise AutoqError(f"config must be an autoq.SearchConfig, got {type(config).__name__}; pass its fields as keywords instead")
        budget, options, defaulted = _with_config(config, budget, options)
    unknown = set(options) - _CONFIG_FIELDS
    if unknown:  # search's own keywords are valid too: 'evalute' listed the config's alone, evaluate not among them
        import difflib
        import inspect

        own = {n for n, p in inspect.signature(search).parameters.items() if p.kind is not p.VAR_KEYWORD}
        valid = sorted(_CONFIG_FIELDS | own)
        named = ", ".join(f"{name!r}" + "".join(f" (did you mean {m!r}?)" for m in difflib.get_close_matches(name, valid, n=1))
                          for name in sorted(unknown))
        raise AutoqError(f"unknown option(s) {named}; valid options: {valid}")
    options, budget = _with_stored(options, budget)
    config = SearchConfig(budget=budget, **options)
    if defaulted:
        _say_stored_over_defaults(defaulted, config)
    if "mlflow_parent_run_id" not in options and not config.resume:  # None, given: not nested; a resume finds its stored parent
        parent = active_parent(config.tracking_uri)
        if parent is not None:
            config = replace(config, mlflow_parent_run_id=parent)
    if options.get("experiment") is not None and config.mlflow_parent_run_id and config.tracking_uri:
        from autoq.tracking import outer_run

        outer_run(config.tracking_uri, config.mlflow_parent_run_id, options["experiment"])  # as --experiment: else ignored unsaid
    if isinstance(model, os.PathLike):
        model = os.fspath(model)  # a Hugging Face folder as a Path, as export and load take it
    if model is None or isinstance(model, str):
        given = [label for label, value in (("calibration", calibration), ("evaluate", evaluate), ("name", name), ("holdout", holdout),
                                            ("metric", metric)) if value is not None]
        if given:  # silently dropped, a run named by the caller was logged under the built-in's name
            which = repr(model) if model else "the default model"
            raise AutoqError(f"{' and '.join(given)} go{'es' if len(given) == 1 else ''} with an nn.Module; {which} (a built-in or a Hugging Face "
                             "folder) brings its own data, metric and name: pass model=<your nn.Module> with calibration batches to use them")
        check_tracking(config)  # a store that does not answer, before the model loads
        return _said(run_search(load_workload(model), config), config)
    modes = [(m, m.training) for m in model.modules()] if isinstance(model, nn.Module) else []
    try:
        workload = make_workload(model, calibration, evaluate, name=name, holdout=holdout, metric=metric,
                                 fingerprint=config.resolved_storage() is not None)  # a search that cannot be resumed needs none
        return _said(run_search(workload, config), config)
    finally:  # the output-fidelity proxy evaluates in eval mode: a pipeline's model in train() goes back to it
        for module, training in modes:
            module.training = training


def _said(result: SearchResult, config: SearchConfig) -> SearchResult:
    """``result``, its closing note printed first where the search shows progress: where the results are and how to look
    at them, as the command line's summary says (a Python search ended without a word)."""
    if config.progress:
        from autoq.engine.summary import closing_note

        print(closing_note(result), file=sys.stderr, flush=True)
    return result


def _with_config(config: SearchConfig, budget: Any, options: dict[str, Any]) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """``budget`` and ``options`` with ``config``'s fields that differ from a default ``SearchConfig()``'s added beneath
    them (a keyword given beside ``config`` wins); the defaults stay not given, so nesting and a resume's stored
    settings decide as without a config. Third: the counts a resume takes from its store that ``config`` holds at their
    defaults (and no keyword gives), for :func:`_say_stored_over_defaults` (its budget and tracking URI a resume cannot
    change: a config's defaults of those are taken over, unsaid, as the keywords' are)."""
    default = SearchConfig()
    given = {f.name: getattr(config, f.name) for f in fields(SearchConfig) if getattr(config, f.name) != getattr(default, f.name)}
    defaulted = {name: getattr(config, name) for name in _STORED_COUNTS if name not in given and name not in options}
    if budget is None:
        budget = given.pop("budget", None)
    given.pop("budget", None)
    return budget, {**given, **options}, defaulted


def _say_stored_over_defaults(defaulted: dict[str, Any], config: SearchConfig) -> None:
    """Note each of a resume's stored settings taken over a value its ``config`` held: a config's field at
    ``SearchConfig``'s default cannot be told from one left unset, so ``SearchConfig(resume=True, n_trials=100)`` ran to
    the stored target (6 trials, nothing evaluated) without a word, where ``n_trials=100`` as a keyword ran to 100."""
    if not (config.resume and config.study_name):
        return
    for name, value in defaulted.items():
        taken = getattr(config, name)
        if taken != value:
            note(f"resuming {config.study_name!r}: {name}={taken!r} from its stored settings; the config's {name}={value!r} is "
                 f"SearchConfig's default, which a config cannot tell from unset: pass {name}={value!r} as a keyword beside "
                 "config= to use it")


def _with_stored(options: dict[str, Any], budget: str | float | Budget | None) -> tuple[dict[str, Any], str | float | Budget]:
    """``(options, budget)`` with what a resume names none of taken from its stored settings (read once), as the command
    line's does: the ``tracking_uri`` it logged to (or no MLflow, as it ran; from another folder it opened that folder's
    ``mlflow.db`` and a second parent run), its budget (the default one was compared with it, and refused), and its
    counts, ``n_trials`` and ``max_retries`` (the defaults ran a 300-trial search to 100 and stored 100 as its target).
    A ``None`` budget of a new search is `DEFAULT_BUDGET`."""
    given = DEFAULT_BUDGET if budget is None else budget
    if not (options.get("resume") and options.get("study_name")) or (
            {"tracking_uri", *_STORED_COUNTS} <= set(options) and budget is not None):
        return options, given
    from autoq.engine.resume import kept_tracking_uri, started_settings

    storage = SearchConfig(**{k: options[k] for k in ("storage", "tracking_uri") if k in options}).resolved_storage()  # beside its store
    if storage is None:
        return options, given  # nothing stored to resume from: the search itself says so
    stored = started_settings(storage, options["study_name"])
    options = {**{k: stored[k] for k in _STORED_COUNTS if stored.get(k) is not None}, **options}
    if "tracking_uri" not in options:
        take, kept = kept_tracking_uri(stored)
        if take:
            options = {**options, "tracking_uri": kept, "storage": storage}
    return options, given if budget is not None else stored.get("budget") or DEFAULT_BUDGET


def make_workload(
    model: nn.Module,
    calibration: Iterable[Any] | None,
    evaluate: Callable[[nn.Module], float] | None,
    name: str | None = None,
    holdout: float | None = None,
    metric: str | None = None,
    fingerprint: bool = True,
) -> Workload:
    """Wrap a user's model, data and metric (or the built-in output-fidelity proxy); ``holdout`` (0.25 if None) is the
    proxy's, so with ``evaluate`` it is refused. ``fingerprint``: hash the weights and data, which a resume compares (a pass
    over every weight: a search without storage, never resumed, skips it)."""
    if not isinstance(model, nn.Module):
        raise AutoqError(f"model must be a torch.nn.Module, a built-in name or a Hugging Face folder (str or path), got "
                         f"{type(model).__name__} {model!r:.80}")
    for label, value in (("metric", metric), ("name", name)):  # logged as MLflow text: metric=3 failed after the study was made
        if value is not None and not isinstance(value, str):
            raise AutoqError(f"{label} must be a str (what the {'quality' if label == 'metric' else 'model'} is called in the summary and "
                             f"MLflow) or None, got {type(value).__name__} {value!r}")
    model = uncompiled(model)  # searched eagerly, by its own layer names: its export loads into the model itself
    check_has_values(model)  # before the reference outputs, whose failure blamed the batches
    batches = user_batches(calibration) if calibration is not None else []
    held_out: list[Any] = []
    if evaluate is None:
        if len(batches) < 2:
            raise AutoqError("without an evaluate function, autoq needs at least 2 calibration batches (one is held out to measure output fidelity)")
        # all of them, before the split, so that the batch named is the caller's: only the calibration part was checked,
        # and NaN in a held-out batch read as the model's output's, numbered within the held-out part (or, through a
        # saturating first layer, went unseen)
        check_finite_batches(batches)
        holdout = 0.25 if holdout is None else holdout
        if isinstance(holdout, bool) or not isinstance(holdout, numbers.Real) or not 0 < holdout < 1:
            raise AutoqError(f"holdout must be between 0 and 1, got {holdout!r}")
        n_held = min(len(batches) - 1, max(1, math.ceil(holdout * len(batches))))  # at least one batch left to calibrate on
        held_out, batches = batches[-n_held:], batches[:-n_held]
        model.eval()
        evaluate = OutputFidelity(model, held_out)
        metric = metric or evaluate.description
    elif not callable(evaluate):
        raise AutoqError("evaluate must be a callable taking the model and returning a float (higher is better)")
    elif holdout is not None:  # accepted and unused, holdout=7 went unsaid
        raise AutoqError(f"holdout={holdout!r} sets the batches the output-fidelity proxy holds out; with evaluate, quality is "
                         "evaluate's and every calibration batch calibrates: drop holdout, or evaluate to use the proxy")
    return Workload(name=name or type(model).__name__, model=model, calibration=batches, evaluate=evaluate, metric=metric or "user-defined quality (higher is better)",
                    data_fingerprint=_fingerprint(model, batches, held_out) if fingerprint else "")


def _fingerprint(model: nn.Module, calibration: Sequence[Any], held_out: Sequence[Any]) -> str:
    """What a resume of a search of the caller's own model compares besides its class name: its weights, and the data
    it calibrates and (without ``evaluate``) measures on, and where the two part: another ``holdout`` hashed the same
    batches, and a resume mixed trials measured on other held-out batches. Another model or other data would mix two
    searches' trials."""
    split = f", the last {len(held_out)} held out" if held_out else ""
    return f"weights {model_hash(model)}, data {data_fingerprint([*calibration, *held_out])}{split}"
