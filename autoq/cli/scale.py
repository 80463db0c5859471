"""The ``autoq search`` options for backends, workers, retries and resume (not a subcommand)."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

# search option (argparse dest) -> key of the settings stored with the study (autoq.engine.resume)
_STORED = {"budget": "budget", "space": "space", "sampler": "sampler", "seed": "seed", "skip": "skip", "pin": "pins",
           "device": "device", "batch": "batch", "model": "model_source", "n_trials": "n_trials", "experiment": "experiment",
           "strategy": "strategy", "seed_from": "seed_from", "sequential": "sequential", "max_retries": "max_retries"}

# stored settings a search started from Python may hold and ``autoq search`` has no option for: a resume takes them
PYTHON_ONLY = ("max_uniform_seeds", "n_fill_seeds")


def add_scale_args(p: argparse.ArgumentParser) -> None:
    """Add the options; call it after the other options of ``autoq search`` (it records their defaults)."""
    g = p.add_argument_group("scale-out, failures and resume")
    g.add_argument("--backend", default="optuna", choices=("optuna", "ray"), help="optuna: evaluate trials in this process (default); ray: on Ray Tune workers")
    g.add_argument("--workers", type=int, default=1, help="trials evaluated at once (ray; default: 1)")
    g.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per Ray trial (default: 1)")
    g.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs per Ray trial; fractions share a GPU (default: 0)")
    g.add_argument("--address", default=None, help="join this Ray cluster ('auto', 'ray://HOST:10001'); default: $RAY_ADDRESS where set, else a local Ray for this search")
    g.add_argument("--max-retries", type=int, default=2, help="retry a failing trial this many times before it counts as failed (default: 2)")
    g.add_argument("--resume", default=None, metavar="NAME",
                   help="continue the interrupted search NAME (its study name) from its storage; its other settings are read back from it")
    p.set_defaults(search_defaults={a.dest: a.default for a in p._actions})


def resumed_args(args: argparse.Namespace) -> argparse.Namespace:
    """With ``--resume NAME``: options not on the command line take the stored search's values (one given at its
    default value is kept: ``--n-trials 100`` asks for 100), ``--tracking-uri`` too (a resume given only ``--storage``
    started a second parent run in the working folder's MLflow store). The storage is found first, by the options given."""
    if not args.resume:
        return args
    from autoq.cli.mlflow_args import tracking_uri_of
    from autoq.engine import SearchConfig
    from autoq.engine.resume import kept_tracking_uri, started_settings
    from autoq.errors import AutoqError

    if args.study_name and args.study_name != args.resume:
        raise AutoqError(f"--resume {args.resume} and --study-name {args.study_name} name different searches; give one of them")
    if args.storage.lower() == "none":
        raise AutoqError(f"--resume {args.resume} reads the search from its Optuna storage, and --storage none keeps none; "
                         "pass the storage it ran with, or leave --storage out for the default")
    values = vars(args).copy()
    given = getattr(args, "given", None)  # the options on the command line (main sets it); else: those not at their default
    defaults = args.search_defaults
    def left_out(dest: str) -> bool:
        return dest not in given if given is not None else values.get(dest) == defaults.get(dest)

    storage = SearchConfig(tracking_uri=tracking_uri_of(args), storage=args.storage).resolved_storage()
    recorded = _recorded_storage(args, storage) if left_out("storage") else None
    storage = recorded or storage
    stored = started_settings(storage, args.resume)
    if stored and stored.get("model_source") is None and "model" in stored and getattr(args, "model", None) is None:
        raise AutoqError(f"search {args.resume!r} searched a model passed from Python ({stored['model']}), which a command line cannot "
                         "name; resume it from Python: autoq.search(model, data, ..., resume=True, study_name=...)")
    _check_plugins(args.resume, stored.get("plugins") or [], getattr(args, "plugins", None) or [])
    for dest, key in _STORED.items():
        if key in stored and stored[key] is not None and left_out(dest):
            values[dest] = [f"{p}={c}" for p, c in stored[key]] if dest == "pin" else stored[key]
        elif dest == "seed_from" and key in stored and left_out(dest):  # seed_from=None from Python: the option's "none"
            values[dest] = "none"
    for key in PYTHON_ONLY:  # no option of the command line sets them: a Python search's own were refused as other settings
        if key in stored:
            values[key] = stored[key]
    _check_model(args.resume, stored.get("model_source"), values.get("model"))
    _check_sampler(args.resume, stored.get("sampler"), left_out("sampler"))
    take, kept = kept_tracking_uri(stored)
    if take and left_out("tracking_uri"):
        values["tracking_uri"] = kept or "none"  # its MLflow parent run where it is, or no MLflow as it ran
        values["storage"] = storage  # found by the options given: not again beside the stored store
    if recorded:
        values["storage"] = recorded
    values["study_name"] = args.resume
    return argparse.Namespace(**values)


def _recorded_storage(args: argparse.Namespace, default: str) -> str | None:
    """The storage the tracking store's run of the search ``args.resume`` records, where the default storage holds no
    such study: a resume from another folder given only ``--tracking-uri`` looked for a search run with ``--storage``
    beside that store, and said there was none. ``None`` where the default holds it or no run records another."""
    from mlflow.exceptions import MlflowException

    from autoq.cli.mlflow_args import tracking_uri_of
    from autoq.engine.resume import study_exists
    from autoq.errors import AutoqError
    from autoq.tracking.mlflow_logger import run_storage, sqlite_path, tracking_client
    from autoq.tracking.runs import find_search

    uri = tracking_uri_of(args)
    if uri is None or study_exists(default, args.resume):
        return None
    db = sqlite_path(uri)
    if db is not None and not db.exists():  # MLflow would make an empty store there
        return None
    try:
        client = tracking_client(uri)
        experiment = client.get_experiment_by_name(args.experiment)
        run = find_search(client, experiment.experiment_id, args.resume) if experiment is not None else None
    except (MlflowException, AutoqError):  # the store unreadable, two searches of the name: the default's error stands
        return None
    found = run_storage(run) if run is not None else None
    return found if found and found != default and study_exists(found, args.resume) else None


def _check_model(name: str, stored: str | None, given: str | None) -> None:
    """Refuse another model than the stored search's before loading it (SmolLM2 or a large folder took a while, to be
    refused after). Two folders are left to the full check: a moved folder is the same model (its weights say so)."""
    from autoq.builtin import BUILTINS, DEFAULT_MODEL
    from autoq.errors import AutoqError

    given = given or DEFAULT_MODEL
    if stored is None or given == stored or (given not in BUILTINS and stored not in BUILTINS):
        return
    raise AutoqError(f"cannot resume {name!r} with other settings: model {given!r} (stored: {stored!r}); resume with the stored "
                     "one (leave --model out)")


def _check_sampler(name: str, stored: str | None, left_out: bool) -> None:
    """Refuse, before the model loads, to resume a search whose sampler no ``--sampler`` names here (the stored
    plug-ins are loaded by now, `_check_plugins`): an Optuna sampler instance from Python, stored by its class's name,
    or one a script registered; the registry's "unknown sampler" sent the first to look for a plug-in."""
    from autoq.engine.strategy import sampler_names
    from autoq.errors import AutoqError

    if stored is None or not left_out or stored in sampler_names():
        return
    raise AutoqError(f"search {name!r} searched with sampler {stored!r}, which no --sampler names here: an Optuna sampler "
                     "passed from Python (an instance, stored by its class), or one a script registered (register_sampler). "
                     "Resume it from Python with the same sampler (autoq.search(model, data, ..., sampler=..., resume=True, "
                     f"study_name={name!r})), or load the module that registers it (--plugin MODULE)")


def _check_plugins(name: str, stored: list[str], loaded: list[str]) -> None:
    """Refuse to resume a search whose plug-ins are not loaded, naming them: the first unknown name (a strategy, a
    sampler) said only that it was unknown."""
    from autoq.errors import AutoqError
    from autoq.plugins import missing_plugins

    missing = missing_plugins(stored, loaded)
    if missing:
        options = " ".join(f"--plugin {shlex.quote(p)}" for p in missing)
        raise AutoqError(f"search {name!r} ran with the plug-in(s) {', '.join(missing)}, which this command did not load; "
                         f"add {options}")


def scale_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``SearchConfig`` fields these options set."""
    return {
        "backend": args.backend, "workers": args.workers, "cpus_per_trial": args.cpus_per_trial, "gpus_per_trial": args.gpus_per_trial,
        "address": args.address, "max_retries": args.max_retries, "resume": bool(args.resume),
    }
