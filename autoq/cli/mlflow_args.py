"""The MLflow options the subcommands share: where to log or read, in which experiment, nested in which run."""

from __future__ import annotations

import argparse


def add_mlflow_args(p: argparse.ArgumentParser, experiment: bool = True, nest: bool = False, can_skip: bool = False) -> None:
    """``--tracking-uri`` (and ``--experiment``, ``--mlflow-parent-run-id``), defaulting as MLflow's own clients do:
    ``$MLFLOW_TRACKING_URI`` and ``$MLFLOW_EXPERIMENT_NAME`` (or ``_ID``) where set. The experiment's default is
    resolved once the command runs (:func:`fill_experiment`), not for every subcommand's parser: an
    ``$MLFLOW_EXPERIMENT_ID`` is looked up in the store."""
    from autoq.tracking import DEFAULT_EXPERIMENT, DEFAULT_TRACKING_URI, default_tracking_uri

    skip = "; 'none' to skip" if can_skip else ""
    p.add_argument("--tracking-uri", default=default_tracking_uri(),
                   help=f"MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else {DEFAULT_TRACKING_URI}{skip})")
    if experiment:
        p.add_argument("--experiment", default=None,
                       help=f"MLflow experiment name (default: $MLFLOW_EXPERIMENT_NAME, else the experiment $MLFLOW_EXPERIMENT_ID names, "
                            f"else {DEFAULT_EXPERIMENT})")
    if nest:
        p.add_argument("--mlflow-parent-run-id", default=None, metavar="RUN_ID",
                       help="nest this command's MLflow run in an existing run (a pipeline step's); it then logs to that run's experiment, "
                            "which an --experiment given must name")


def tracking_uri_of(args: argparse.Namespace) -> str | None:
    """``--tracking-uri``, or ``None`` (no MLflow) for ``none``, as the Python API's ``tracking_uri=None``."""
    return None if args.tracking_uri.lower() == "none" else args.tracking_uri


def fill_experiment(args: argparse.Namespace) -> None:
    """``--experiment`` left out: the default experiment (``args.experiment_default`` keeps it, for hints that name
    ``--experiment`` only where another was given)."""
    if "experiment" in vars(args):
        from autoq.tracking import default_experiment

        # in the store the command logs to or reads (--tracking-uri), as MLflow resolves it against the URI in use
        uri = getattr(args, "tracking_uri", None)
        args.experiment_default = default_experiment(None if uri is None or uri.lower() == "none" else uri)
        args.experiment_given = args.experiment is not None
        if args.experiment is None:
            args.experiment = args.experiment_default


def named_experiment(args: argparse.Namespace) -> str | None:
    """``--experiment`` where the user gave it (the default's name too), else ``None``: a nested run is logged in its
    parent's experiment, and only a named one can be at odds with it (`autoq.tracking.outer_run` checks it)."""
    return args.experiment if args.experiment_given else None
