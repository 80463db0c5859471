"""``autoq export``: write a point logged in MLflow as a packed model (safetensors + autoq_config.json)."""

from __future__ import annotations

import argparse
import sys

from autoq.cli.parser import user_path


def add_parser(sub: argparse._SubParsersAction) -> None:
    from autoq.builtin import BUILTINS
    from autoq.cli.mlflow_args import add_mlflow_args

    p = sub.add_parser(
        "export",
        help="export a searched point as packed safetensors that 'autoq.load' runs on the kernels",
        description="Export the assignment of an MLflow trial run (or the best frontier point of a search run) as packed "
                    "integer weights (safetensors) plus autoq_config.json; load it with autoq.load(DIR).",
    )
    p.add_argument("--run-id", required=True, help="an MLflow trial run id (or a search's parent run id: its best frontier point)")
    add_mlflow_args(p, experiment=False)
    p.add_argument("--model", default=None, type=user_path, help=f"the model the run searched: a built-in ({', '.join(BUILTINS)}) or a local Hugging Face directory "
                                                "(default: the one the search loaded, from the run)")
    p.add_argument("--out", required=True, type=user_path, help="output directory")
    p.add_argument("--log-to-run", action="store_true",
                   help="also log the export as an MLflow model from the run (runs:/RUN_ID/quantized_model, which autoq.load "
                        "and mlflow.pyfunc.load_model take)")
    p.add_argument("--registered-model-name", default=None, metavar="NAME",
                   help="with --log-to-run: add the logged model to the MLflow Model Registry as a new version of NAME")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from autoq.errors import AutoqError
    from autoq.export import export
    from autoq.export.config import read_config
    from autoq.export.from_run import point_from_run
    from autoq.export.mlflow_store import check_loggable, check_registered_name, log_export
    from autoq.tracking import absolute_uri

    if args.registered_model_name is not None:
        if not args.log_to_run:
            raise AutoqError("--registered-model-name registers the model that --log-to-run logs; pass both")
        check_registered_name(args.registered_model_name)  # now, not after quantizing
    point = point_from_run(args.tracking_uri, args.run_id)
    if args.log_to_run:
        check_loggable(args.tracking_uri, args.run_id)  # now, not after quantizing
    assignment = point.assignment
    print(f"autoq: exporting {point.what} ({assignment.summary()}) of {args.model or point.model_source or 'the model'} ...",
          file=sys.stderr, flush=True)
    out = export(args.model, point, args.out, progress=not args.no_progress)  # the run's model, sequential flag and data
    out = out.resolve()  # shown in full, as the stores are: the load line works from any folder
    logged = log_export(args.tracking_uri, args.run_id, out, args.registered_model_name, point.run_id) if args.log_to_run else None
    config = read_config(out)
    cost = config["cost"]
    half = sum(choice.weight.is_half for choice in assignment.values())
    kept = f", {half} kept in fp16" if half else ""  # an fp16 layer is stored, not packed
    print(f"Exported {len(assignment)} layers ({len(assignment) - half} packed{kept}) to {out}: {config['weights']} is "
          f"{config['file_bytes'] / 1e6:.3f} MB "
          f"(cost model: {cost['size_bytes'] / 1e6:.3f} MB at {cost['effective_bits']:.3f} effective bits).")
    print(f"  Load it:  model = autoq.load({str(out)!r})")
    if logged:
        import shlex

        from autoq.tracking.mlflow_logger import shown_uri

        store = shown_uri(absolute_uri(args.tracking_uri))  # as every printed store: a server's login left out
        print(f"Logged as an MLflow model of run {args.run_id} ({logged.model_uri}); from any machine that reaches the store:")
        print(f"  model = autoq.load({logged.run_uri!r}, tracking_uri={store!r})")
        # the variable as a shell sets it: a store in a folder with a space was cut at the space when pasted
        print(f"  model = mlflow.pyfunc.load_model({logged.model_uri!r})   # with MLFLOW_TRACKING_URI={shlex.quote(store)}")
        if logged.registered:
            print(f"Registered as {logged.registered} in the Model Registry.")
    return 0
