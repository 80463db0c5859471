"""``autoq sensitivity``: per-layer sensitivity table (CSV + JSON), heat map (PNG), logged to MLflow."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from autoq.cli.parser import user_path


def add_parser(sub: argparse._SubParsersAction) -> None:
    from autoq.builtin import BUILTINS, DEFAULT_MODEL
    from autoq.cli.mlflow_args import add_mlflow_args
    from autoq.search_spaces import preset_names
    from autoq.sensitivity import metric_names

    p = sub.add_parser(
        "sensitivity",
        help="score every (layer, option) by a sensitivity metric",
        description=(
            "Compute a sensitivity table over (layer, option) for one metric, write it as CSV and JSON with a heat map, "
            "and log all three to MLflow. Tables are cached on disk and reused by `autoq search --seed-from METRIC`."
        ),
    )
    p.add_argument("--metric", required=True, help=f"one of {', '.join(metric_names())}")
    p.add_argument("--model", default=None, type=user_path, help=f"a built-in ({', '.join(BUILTINS)}; default: {DEFAULT_MODEL}) or a local Hugging Face model directory")
    p.add_argument("--space", default="default", type=user_path,
                   help=f"search-space preset ({', '.join(preset_names())}) or YAML file whose options are scored (default: default)")
    p.add_argument("--skip", action="append", default=[], metavar="REGEX", help="leave layers matching REGEX out (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a metric setting, e.g. n_samples=128, tol=0.02, max_iter=200 (repeatable)")
    p.add_argument("--out", default="sensitivity-tables", type=user_path, help="output folder (default: ./sensitivity-tables)")
    p.add_argument("--refresh", action="store_true", help="recompute even if an identical table is cached (and cache the new one)")
    add_mlflow_args(p, nest=True, can_skip=True)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")


def parse_settings(items: list[str], defaults: Mapping[str, object] | None = None) -> dict[str, object]:
    """``["n_samples=128", "tol=0.02"]`` -> ``{"n_samples": 128, "tol": 0.02}`` (ints, floats, else strings); a setting
    whose default (``defaults``, the metric's) is a bool reads true/false, yes/no, 1/0, and one whose default is a string
    stays the text typed: a plug-in's ``relative=true`` was the string 'true', refused as not a bool whatever was typed."""
    from autoq.errors import AutoqError

    settings: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise AutoqError(f"cannot parse --set {item!r}; expected KEY=VALUE such as n_samples=128")
        if key in settings:  # the last was taken silently
            raise AutoqError(f"--set {key} is given twice; set it once")
        default = (defaults or {}).get(key)
        if isinstance(default, bool) and value.lower() in _TRUE + _FALSE:
            settings[key] = value.lower() in _TRUE
            continue
        if isinstance(default, str):
            settings[key] = value
            continue
        for cast in (int, float):
            try:
                settings[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            settings[key] = None if value.lower() == "none" else value
    return settings


def run(args: argparse.Namespace) -> int:
    from autoq.builtin import load_workload
    from autoq.cli.mlflow_args import named_experiment, tracking_uri_of
    from autoq.errors import AutoqError
    from autoq.evaluate.cache import uncalled_layers
    from autoq.files import first_missing, make_folder, removed_if_empty
    from autoq.messages import note
    from autoq.model import find_layers, left_out_note, mark_unreached, searched_tied, skipped_names, unreached_note
    from autoq.model.layers import compile_patterns
    from autoq.quiet import quiet_logs
    from autoq.search_spaces import load_preset
    from autoq.sensitivity import get_metric, workload_table
    from autoq.space import SearchSpace
    from autoq.tracking import check_experiment, sqlite_path, tracking_client

    info = get_metric(args.metric)  # an unknown metric fails before loading the model
    settings = parse_settings(args.set, info.defaults)
    from autoq.sensitivity.registry import resolve_settings

    resolve_settings(info, settings)
    preset = load_preset(args.space)
    compile_patterns(args.skip, "skip")  # a bad --skip now, not after the model loads (as autoq search does)
    if Path(args.out).exists() and not Path(args.out).is_dir():  # now, not after the table is computed
        raise AutoqError(f"--out {args.out} is a file; pass a folder (new or existing) for the table's files")
    to_mlflow = tracking_uri_of(args) is not None
    if to_mlflow and sqlite_path(args.tracking_uri) is None:  # a store MLflow refuses fails now, not after the table
        tracking_client(args.tracking_uri)
    if to_mlflow and not args.mlflow_parent_run_id:
        check_experiment(args.tracking_uri, args.experiment)
    if args.mlflow_parent_run_id:  # refused before the table is computed, not after
        from autoq.tracking import outer_run

        if not to_mlflow:
            raise AutoqError("--mlflow-parent-run-id nests the table's MLflow run in another run, but MLflow logging is off (--tracking-uri none)")
        parent = outer_run(args.tracking_uri, args.mlflow_parent_run_id, named_experiment(args))
        # the table's run is logged in its parent's experiment: the printed search names it, or it logged to the default's
        args.logged_experiment = tracking_client(args.tracking_uri).get_experiment(parent.info.experiment_id).name
    made_from = first_missing(args.out)
    make_folder(args.out, "--out")  # the last check before the model loads; a refusal after it removes the folder it made
    with removed_if_empty(Path(args.out), made_from):
        print(f"autoq: loading {args.model or 'the default model (all-MiniLM-L6-v2)'} ...", file=sys.stderr, flush=True)
        workload = load_workload(args.model, with_metric=False)  # a table needs the model and calibration data alone
        skip = tuple(workload.skip) + tuple(args.skip)
        layers = find_layers(workload.model, skip)
        left_out = left_out_note(workload.model, skip, searched_tied(workload.model, skip, (), layers))
        if left_out:
            note(left_out)
        unsearched = skipped_names(workload.model, skip, layers)  # a rule matching only them is told so, as a search's
        space = SearchSpace.build(preset, layers, skipped=unsearched)
        uncalled = uncalled_layers(workload.model, space.layers, space.options, workload.calibration)
        if uncalled:  # as a search's space gives them: data-free methods only (GPTQ, AWQ, ... have no rows of theirs)
            note(unreached_note(uncalled))
            space = SearchSpace.build(preset, mark_unreached(layers, uncalled), skipped=unsearched)
        start = time.perf_counter()
        table = workload_table(workload, space.layers, space.options, args.metric, settings, refresh=args.refresh, progress=not args.no_progress)
        wall = time.perf_counter() - start
        out = Path(args.out).resolve()  # the files and the printed search command name it whole: they work from any folder
        stem = _stem(_model_part(workload.name, workload.source), args, settings)
        table_json = table.save(out / f"{stem}.json")
        paths = [table.save(out / f"{stem}.csv"), table_json, table.heatmap(out / f"{stem}.png")]
        run_id = None
        if to_mlflow:
            with quiet_logs():
                run_id = _log_mlflow(args, workload.name, table, wall, paths)
        from autoq.tracking import absolute_uri

        uri = absolute_uri(args.tracking_uri) if run_id else None
        print(_summary(table, wall, paths, uri, run_id, _search_command(args, table_json, workload.source)))
    return 0


def _search_command(args: argparse.Namespace, table_json: Path, model_source: str) -> str:
    """The search this table seeds: same model, space and skips, seeded from the JSON table itself (exact, whatever --set said)."""
    import shlex

    from autoq.plugins import portable

    words = ["autoq", "search"]
    for plugin in getattr(args, "plugins", ()):  # the table's options may name a plug-in's methods
        words += ["--plugin", portable(plugin)]
    if args.model:  # the workload's source: a built-in by its name, a directory by its absolute path
        words += ["--model", model_source]
    if args.space != "default":
        from autoq.search_spaces import portable_space

        words += ["--space", portable_space(args.space)]
    for pattern in args.skip:
        words += ["--skip", pattern]
    words += _tracking_words(args)
    return shlex.join([*words, "--seed-from", str(table_json)])


def _tracking_words(args: argparse.Namespace) -> list[str]:
    """The store and experiment the table's run went to, where not the defaults: pasted without them, the search logged
    to ./mlflow.db of wherever it ran, away from the table's run. The default store is relative (``sqlite:///mlflow.db``):
    named whole, as a search's summary names it."""
    from autoq.tracking import absolute_uri, default_tracking_uri
    from autoq.tracking.mlflow_logger import shown_uri

    if args.tracking_uri.lower() == "none":
        return []
    whole = absolute_uri(args.tracking_uri)
    words = [] if args.tracking_uri == default_tracking_uri() == whole else ["--tracking-uri", shown_uri(whole)]
    logged = getattr(args, "logged_experiment", None)  # a nested run's: its parent's experiment, named or not
    if logged is not None:
        return words + (["--experiment", logged] if logged != getattr(args, "experiment_default", None) else [])
    return words + (["--experiment", args.experiment] if getattr(args, "experiment_given", False) else [])


def _stem(model_name: str, args: argparse.Namespace, settings: dict[str, object]) -> str:
    """The table files' name: model (`_model_part`), space (if not the default), metric, and the ``--set`` settings and ``--skip``
    patterns where given. A table of other settings or skips no longer overwrites the one a printed ``--seed-from``
    command names (`digits-cnn-kl-n_samples-16`; skips by a short digest, regular expressions making poor names)."""
    import hashlib

    parts = [model_name, *([_space_part(args.space)] if args.space != "default" else []), args.metric]
    parts += [f"{key}-{value}" for key, value in sorted(settings.items())]
    if args.skip:
        parts.append("skip-" + hashlib.sha256("\n".join(args.skip).encode()).hexdigest()[:8])
    return "-".join(_safe(part) for part in parts)


def _model_part(name: str, source: str) -> str:
    """A built-in by its name; a model folder by its name and a short digest of its absolute path (``source``), so that
    two experiments' ``final`` or ``checkpoint-500`` folders write tables of their own, as two spaces' files do."""
    return _with_path_digest(name, source) if Path(source).is_absolute() else name


def _space_part(space: str) -> str:
    """A preset by its name; a YAML file by its stem and a short digest of its path, so that two teams' ``space.yaml``
    (or a file named as a preset) write tables of their own."""
    from autoq.search_spaces import preset_names

    if space in preset_names():  # the rule load_preset reads it by
        return space
    return _with_path_digest(Path(space).stem, space)


def _with_path_digest(name: str, path: str) -> str:
    """``name`` and a short digest of ``path`` made absolute: a file name shared by two folders names two files."""
    import hashlib

    return f"{name}-{hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:6]}"


def _safe(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def _log_mlflow(args: argparse.Namespace, model_name: str, table, wall: float, paths: list[Path]) -> str:
    import contextlib

    from mlflow.entities import Metric

    from autoq.engine.parent_run import listed_param
    from autoq.interrupts import deferred_interrupts
    from autoq.search_spaces import portable_space
    from autoq.tracking import MlflowTracker
    from autoq.tracking.mlflow_logger import store_errors, store_failed

    tracker = MlflowTracker.open(args.tracking_uri, args.experiment, args.mlflow_parent_run_id)
    # space and skip as a search's parent run logs them: two tables of other --skip differed only in n_layers, and a
    # space file was named as typed (relative), where the printed search command names it whole
    params = {"metric": table.metric, "model": model_name, "model_hash": table.model_hash, "data_fingerprint": table.data_fingerprint,
              "space": portable_space(args.space), "skip": listed_param(args.skip), "n_layers": len(table.layers),
              **{f"setting.{k}": _unquoted(v) for k, v in table.params}}
    run_id = tracker.start(f"sensitivity-{table.metric}-{model_name}", params, {"autoq.kind": "sensitivity", "autoq.model": model_name})
    try:
        now = int(time.time() * 1000)
        tracker.client.log_batch(run_id, metrics=[Metric("compute_seconds", table.seconds, now, 0), Metric("wall_seconds", wall, now, 0)],
                                 synchronous=True)
        for path in paths:
            tracker.client.log_artifact(run_id, str(path))
    except BaseException as exc:
        # the run was left RUNNING for good (Ctrl-C or SIGTERM as the files went up, a full artifact disk): nothing lists
        # or ends it later. A server that failed is not asked again: that waits through MLflow's retries
        failed = isinstance(exc, store_errors())
        if not (failed and tracker.remote):
            with deferred_interrupts(), contextlib.suppress(Exception):
                tracker.client.set_terminated(run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        if failed:
            raise store_failed(args.tracking_uri, exc, f"the table's files are in {paths[0].parent}; run this again once the store "
                               "answers (the table is read from the cache), or pass --tracking-uri none") from None
        raise
    tracker.client.set_terminated(run_id, "FINISHED")
    return run_id


def _unquoted(value: str) -> str:
    """A table's setting as MLflow shows it: ``auto``, not the ``'auto'`` the table keeps (its repr), so that a filter
    ``params.`setting.output_kind` = 'auto'`` finds it."""
    import ast

    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
        return parsed if isinstance(parsed, str) else value
    return value


def _summary(table, wall: float, paths: list[Path], uri: str | None, run_id: str | None, search: str) -> str:
    from autoq.choice import LayerChoice
    from autoq.sensitivity.table import layer_scores

    per_layer = {len([e for e in table.entries if e.layer == layer]) for layer in table.layers}
    shape = f"{min(per_layer)} options" if len(per_layer) == 1 else f"{min(per_layer)} to {max(per_layer)} options each"
    lines = [f"{table.metric} sensitivity of {len(table.layers)} layers x {shape} "
             f"({'from the cache, computed' if table.from_cache else 'computed'} in {table.seconds:.1f} s; this run {wall:.1f} s)."]
    # an option every layer was scored at (a space's rules may give layers different options), int3 where there is one;
    # not fp16, whose scores are rounding noise: it ranked w8a8's layers by noise 1000x below their int8 scores
    scored = {(e.layer, e.option) for e in table.entries}
    common = [o for o in table.options if all((layer, o) in scored for layer in table.layers) and not LayerChoice.from_name(o).weight.is_half]
    probe = next((o for o in common if o.startswith("int3-")), common[0] if common else None)
    if probe is not None:
        scores = sorted(zip(layer_scores(table, table.layers, probe), table.layers), reverse=True)
        lines.append(f"Most sensitive at {probe}: " + ", ".join(f"{name} ({score:.3g})" for score, name in scores[:5]))
    else:
        worst = {layer: max(e.score for e in table.entries if e.layer == layer) for layer in table.layers}
        ranked = sorted(worst.items(), key=lambda item: item[1], reverse=True)
        lines.append("Most sensitive (each layer's worst option; the layers share no quantized one): " + ", ".join(f"{name} ({score:.3g})" for name, score in ranked[:5]))
    lines.append("Files: " + ", ".join(str(p) for p in paths))
    if run_id:
        lines.append(f"MLflow: run {run_id} in {uri} (run tag autoq.kind=sensitivity).")
    lines.append(f"Seed a search with it: {search}")
    return "\n".join(lines)
