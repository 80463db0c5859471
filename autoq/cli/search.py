"""``autoq search``: search per-layer quantization choices within a budget."""

from __future__ import annotations

import argparse
import sys

from autoq.cli.parser import user_path


def add_parser(sub: argparse._SubParsersAction) -> None:
    from autoq.budget import DEFAULT_BUDGET
    from autoq.builtin import BUILTINS, DEFAULT_MODEL
    from autoq.cli.mlflow_args import add_mlflow_args
    from autoq.cli.scale import add_scale_args
    from autoq.search_spaces import preset_names
    samplers, strategies, metrics = _registered_names()

    p = sub.add_parser(
        "search",
        help="search per-layer quantization choices within a budget",
        description="Search per-layer quantization choices within a budget and log the Pareto frontier to MLflow.",
    )
    p.add_argument("--budget", default=DEFAULT_BUDGET, help="average bits per weight ('4.5bits', '4.5'), model size ('20MB', '20MiB') or latency with --device ('3ms', '250us'); default: 4.5bits")
    p.add_argument("--model", default=None, type=user_path, help=f"a built-in ({', '.join(BUILTINS)}; default: {DEFAULT_MODEL}) or a local Hugging Face model directory")
    p.add_argument("--space", default="default", type=user_path,
                   help=f"search-space preset ({', '.join(preset_names())}) or YAML file (default: default)")
    p.add_argument("--n-trials", type=int, default=100, help="trials, uniform baselines included; a sampler's repeat of an earlier assignment counts as one "
                   "and is not evaluated again (default: 100)")
    p.add_argument("--timeout", type=_seconds, default=None, metavar="SECONDS",
                   help="stop starting new trials this many seconds after the search starts (its set-up included; default: none, no limit)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (default: 0)")
    p.add_argument("--sampler", default="tpe", help=f"{' / '.join(samplers)} (default: tpe)")
    p.add_argument("--strategy", default="optuna",
                   help=f"{' / '.join(strategies)}: optuna (default) is a seeded sampler, the others run alone")
    p.add_argument("--seed-from", default="auto", metavar="METRIC", type=_seed_from,
                   help=f"seed from a sensitivity table: {', '.join(metrics)}, or a table file (.json/.csv); "
                        "auto (default): fisher, or kl for a space with activation formats, cached on disk; none: random budget-filling mixes")
    p.add_argument("--skip", action="append", default=[], metavar="REGEX", help="leave layers matching REGEX unquantized (repeatable)")
    p.add_argument("--pin", action="append", default=[], metavar="REGEX=CHOICE", help="fix layers matching REGEX to CHOICE, e.g. 'pooler=fp16' (repeatable)")
    add_mlflow_args(p, nest=True, can_skip=True)
    p.add_argument("--study-name", default=None, help="Optuna study name (default: autoq-MODEL-BUDGET-TIMESTAMP)")
    p.add_argument("--storage", default="auto", help="Optuna storage URL (default: optuna.db beside the MLflow database; 'none': in memory, not resumable)")
    p.add_argument("--device", default=None, type=user_path, metavar="NAME|TABLE.json",
                   help="add latency: a latency table measured by 'autoq kernels bench', or a GPU preset (h100, h200, a100, ...: "
                        "its committed measured table if autoq ships one, else a roofline ESTIMATE; roofline:h100 forces the estimate); "
                        "needed for budgets like '3ms'")
    p.add_argument("--batch", type=int, default=1, help="rows of activations a layer multiplies per call, for latency: sequences x "
                   "tokens for a transformer, examples for an MLP (default: 1; a measured table answers the batches it measured)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--sequential", action="store_true",
                   help="data-driven methods (gptq, awq, ...) see inputs from already-quantized earlier layers: "
                        "one truncated calibration pass per layer for each such choice (see README)")
    add_scale_args(p)  # --backend, --workers, --resume, ... (autoq/cli/scale.py); keep it after the other options
    p.set_defaults(run=run)


def _seed_from(text: str) -> str:
    """``--seed-from``: ``auto`` and ``none`` in any case, as ``--storage`` and ``--timeout`` take ``none`` (``None`` was
    refused as an unknown metric); a metric's name as given, a table's path with a leading ``~`` expanded."""
    return text.lower() if text.lower() in ("auto", "none") else user_path(text)


def _seconds(text: str) -> float | None:
    """``--timeout``: a number of seconds, or ``none`` (no limit), as the Python API's ``timeout=None`` (its errors say so)."""
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (or none: no limit)") from None


def _registered_names() -> tuple[list[str], list[str], list[str]]:
    """Samplers, strategies and metrics, plug-ins' included, for the help; the built-in names where Optuna is not
    installed (a GPU machine lent for `autoq kernels` has torch and Triton only, and builds this parser too)."""
    try:
        from autoq.engine.strategies import strategy_names
        from autoq.engine.strategy import sampler_names
        from autoq.sensitivity import metric_names
    except ImportError:
        return ["tpe", "nsga2", "random"], ["optuna", "ilp", "greedy", "random"], ["kl", "sqnr", "mse", "hessian", "fisher"]
    return sampler_names(), strategy_names(), metric_names()


def run(args: argparse.Namespace) -> int:
    from autoq.api import pins_from_strings
    from autoq.budget import parse_budget
    from autoq.builtin import load_workload
    from autoq.cli.mlflow_args import named_experiment, tracking_uri_of
    from autoq.cli.scale import PYTHON_ONLY, resumed_args, scale_options
    from autoq.engine import SearchConfig, format_summary, run_search
    from autoq.engine.runner import check_tracking
    from autoq.plugins import plugin_note

    args = resumed_args(args)  # --resume NAME: the stored search's settings
    named = named_experiment(args)
    if args.mlflow_parent_run_id and named and tracking_uri_of(args):  # a nested run logs to its parent's experiment
        from autoq.tracking import outer_run

        outer_run(args.tracking_uri, args.mlflow_parent_run_id, named)
    config = SearchConfig(
        budget=parse_budget(args.budget),  # parse first: a bad budget fails before any loading
        space=args.space,
        n_trials=args.n_trials,
        seed=args.seed,
        sampler=args.sampler,
        strategy=args.strategy,
        seed_from=args.seed_from,
        skip=tuple(args.skip),
        pins=tuple(pins_from_strings(args.pin).items()),
        tracking_uri=tracking_uri_of(args),
        experiment=args.experiment,
        mlflow_parent_run_id=args.mlflow_parent_run_id,
        study_name=args.study_name,
        storage=args.storage,  # 'none': in memory, as SearchConfig reads it
        timeout=args.timeout,
        progress=not args.no_progress,
        sequential=args.sequential,
        device=args.device,
        batch=args.batch,
        plugins=tuple(getattr(args, "plugins", None) or ()),
        **{key: getattr(args, key) for key in PYTHON_ONLY if hasattr(args, key)},  # a resume's, read back from the study
        **scale_options(args),
    )
    check_tracking(config)  # a server that does not answer, before the model loads (the search checks it again)
    print(f"autoq: loading {args.model or 'the default model (all-MiniLM-L6-v2)'} ...", file=sys.stderr, flush=True)
    result = run_search(load_workload(args.model), config)
    print(format_summary(result, shell=True))
    if getattr(args, "plugins", None) and (result.tracking_uri or result.storage):  # else no export or resume command was printed
        print(f"Plug-ins: {plugin_note(args.plugins)}.")
    return 0
