"""autoq as one step of a larger AutoML pipeline: an outer Optuna study chooses the bit budget.

The outer study trades accuracy for size: each outer trial picks a budget (bits per weight),
runs an autoq search inside it, and scores the best quantized model found as
``accuracy - size_penalty * effective_bits``. autoq keeps no global state and starts no
Ray unless asked, so it nests inside an outer study (or a Ray Tune trainable) like any
function; its results pickle, so the pipeline can store them and reload them later
(``autoq.SearchResult.from_mlflow(run_id, tracking_uri)`` when MLflow logging is on).

With ``--tracking-uri``, each outer trial is an MLflow run of the pipeline's experiment and its autoq
search is nested in it (``mlflow_parent_run_id``), with the search's trials nested in turn: the MLflow
UI shows outer trial > autoq search > inner trials. ``--register NAME`` then exports the chosen point
as an MLflow model of its trial's run and adds it to the Model Registry as a version of ``NAME``, the
pipeline's last step: ``mlflow.pyfunc.load_model("models:/NAME/<version>")`` serves it.

    python examples/outer_optuna_pipeline.py [--outer-trials 4] [--inner-trials 12] [--model digits-cnn]
                                             [--tracking-uri sqlite:///mlflow.db [--register digits-cnn-quantized]]
"""

from __future__ import annotations

import argparse
import pickle

import mlflow
import optuna

import autoq
from autoq.builtin import load_workload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits-cnn")
    parser.add_argument("--outer-trials", type=int, default=4)
    parser.add_argument("--inner-trials", type=int, default=12)
    parser.add_argument("--size-penalty", type=float, default=0.01, help="accuracy worth one bit per weight")
    parser.add_argument("--out", default=None, help="pickle the best autoq result here")
    parser.add_argument("--tracking-uri", default=None, help="log the pipeline to MLflow here, each search nested in its outer trial's run")
    parser.add_argument("--register", default=None, metavar="NAME", help="with --tracking-uri: register the chosen point's model as NAME")
    args = parser.parse_args()
    if args.register and not args.tracking_uri:
        parser.error("--register needs --tracking-uri: the Model Registry is the tracking store's")
    if args.outer_trials < 1:
        parser.error(f"--outer-trials must be at least 1 (the pipeline picks its best outer trial), got {args.outer_trials}")

    workload = load_workload(args.model)  # load once; every inner search reuses it
    results: dict[int, autoq.SearchResult] = {}

    def objective(trial: optuna.Trial) -> float:
        budget = trial.suggest_float("bits", 3.0, 6.0, step=0.25)
        options = dict(budget=f"{budget}bits", n_trials=args.inner_trials, seed=trial.number, storage=None, progress=False)
        if args.tracking_uri is None:
            result = autoq.engine.run_search(workload, autoq.SearchConfig(**options, tracking_uri=None))
        else:
            with mlflow.start_run(run_name=f"outer-trial-{trial.number}") as run:
                mlflow.log_param("bits", budget)
                result = autoq.engine.run_search(workload, autoq.SearchConfig(**options, tracking_uri=args.tracking_uri,
                                                                               mlflow_parent_run_id=run.info.run_id))
                mlflow.log_metrics({"quality": result.best.quality, "effective_bits": result.best.effective_bits})
        results[trial.number] = result
        best = result.best
        trial.set_user_attr("effective_bits", best.effective_bits)
        trial.set_user_attr("quality", best.quality)
        return best.quality - args.size_penalty * best.effective_bits

    if args.tracking_uri is not None:
        mlflow.set_tracking_uri(args.tracking_uri)
        mlflow.set_experiment("outer-pipeline")
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(objective, n_trials=args.outer_trials)

    print(f"{'outer trial':>11} {'budget':>7} {'quality':>8} {'eff.bits':>8} {'score':>8}")
    for t in study.trials:
        print(f"{t.number:>11} {t.params['bits']:>7.2f} {t.user_attrs['quality']:>8.4f} {t.user_attrs['effective_bits']:>8.3f} {t.value:>8.4f}")
    best = results[study.best_trial.number]
    print(f"best: {study.best_params['bits']} bits per weight -> {best.best.assignment.summary()}")
    if args.out:
        with open(args.out, "wb") as fh:
            pickle.dump(best, fh)
        print(f"wrote {args.out}")
    if args.register:  # the chosen point's trial run gets the model; the registry a new version of it
        autoq.export(args.model, best.best.run_id, f"quantized-{args.register}", tracking_uri=args.tracking_uri, log_to_run=True,
                     registered_model_name=args.register, progress=False)
        version = max(int(v.version) for v in mlflow.MlflowClient(args.tracking_uri).search_model_versions(f"name = '{args.register}'"))
        print(f"registered models:/{args.register}/{version}")


if __name__ == "__main__":
    main()
