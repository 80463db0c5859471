"""``autoq runs`` and ``autoq pareto NAME`` read searches back from the MLflow store."""

from __future__ import annotations

import shlex
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import logged_search

import autoq
from autoq.cli import main
from autoq.engine.sessions import SESSION_ATTR
from autoq.errors import AutoqError


def test_runs_lists_and_pareto_prints_the_frontier(tmp_path, mlflow_uri, capsys):
    def _autoq(*args: str, cwd) -> SimpleNamespace:  # in process: the same entry point as the command, without a new interpreter
        code = main(list(args))
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)

    long_name = "listed-autoq-digits-cnn-4.5bits-20261130-133655-with-a-longer-tail"  # longer than the default names
    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=10, tracking_uri=mlflow_uri, study_name=long_name, progress=False)

    listed = _autoq("runs", "--tracking-uri", mlflow_uri, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    header, row = (next(line for line in listed.stdout.splitlines() if line.startswith(start)) for start in ("study name", long_name))
    assert row.index("FINISHED") == header.index("status") and row.index(result.parent_run_id) == header.index("parent run id")
    assert "FINISHED" in row and "digits-cnn" in row and "4.5bits" in row and result.parent_run_id in row
    assert f"{result.best.quality:.4f}" in row

    for name in (long_name, result.parent_run_id):  # by study name or by parent run id
        shown = _autoq("pareto", name, "--tracking-uri", mlflow_uri, cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert "Pareto frontier" in shown.stdout and f"within 4.5bits ({len(result.frontier)} of 10 evaluated trials" in shown.stdout
        for p in result.frontier:
            assert f"{p.quality:.4f}" in shown.stdout
        assert "Downloading" not in shown.stderr

    missing = _autoq("pareto", "nope", "--tracking-uri", mlflow_uri, cwd=tmp_path)
    assert missing.returncode == 2 and "no search named 'nope'" in missing.stderr and "Traceback" not in missing.stderr
    no_store = _autoq("runs", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}", cwd=tmp_path)
    assert no_store.returncode == 2 and "no MLflow store" in no_store.stderr


def test_pareto_by_run_id_needs_no_experiment(mlflow_uri, capsys):
    """A search nested in a pipeline's experiment, in a store with no 'autoq' experiment: a run id is global."""
    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=3, tracking_uri=mlflow_uri, experiment="pipeline", progress=False, seed_from="none")
    assert main(["pareto", result.parent_run_id, "--tracking-uri", mlflow_uri]) == 0 and "Pareto frontier" in capsys.readouterr().out
    assert main(["pareto", "nope", "--tracking-uri", mlflow_uri]) == 2
    assert "no search named 'nope' in an experiment 'autoq' (there is none)" in capsys.readouterr().err
    # a trial's run id names the search to pass; 'runs' of the default experiment says the others hold searches
    trial = result.best.run_id
    assert main(["pareto", trial, "--tracking-uri", mlflow_uri]) == 2
    assert (f"run {trial!r} is not the parent run of an autoq search: it is trial {result.best.trial} of a search; pass that "
            f"search's parent run id, {result.parent_run_id}") in capsys.readouterr().err
    autoq.search("digits-cnn", budget="4.5bits", n_trials=2, tracking_uri=mlflow_uri, progress=False, seed_from="none")
    assert main(["runs", "--tracking-uri", mlflow_uri]) == 0
    assert "(1 more search in other experiments: 'pipeline' (1); --experiment NAME lists them)" in capsys.readouterr().out


def test_pareto_of_a_search_in_another_experiment_names_that_experiment(mlflow_uri, capsys):
    """A search nested in a pipeline's experiment, asked for by name in the default one: the error said only that
    'autoq runs --experiment NAME' lists an experiment's searches; it names the experiment, and that command works."""
    autoq.search("digits-cnn", budget="4.5bits", n_trials=2, tracking_uri=mlflow_uri, study_name="nested one", experiment="my pipe",
                 progress=False, seed_from="none")
    autoq.search("digits-cnn", budget="4.5bits", n_trials=2, tracking_uri=mlflow_uri, study_name="home", progress=False, seed_from="none")
    assert main(["pareto", "nested one", "--tracking-uri", mlflow_uri]) == 2
    err = capsys.readouterr().err
    assert "no search named 'nested one' in experiment 'autoq'" in err and "it is in experiment 'my pipe': add --experiment 'my pipe'" in err
    assert main(["pareto", "nested one", "--tracking-uri", mlflow_uri, "--experiment", "my pipe"]) == 0
    assert main(["pareto", "nope", "--tracking-uri", mlflow_uri]) == 2
    assert "'autoq runs --experiment NAME' lists the searches of an experiment" in capsys.readouterr().err


def test_pareto_finds_a_search_whose_name_holds_a_single_quote(mlflow_uri, capsys):
    """``bob's`` ran, was logged and listed, and ``autoq pareto "bob's"`` refused the name it had printed a command for."""
    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=2, tracking_uri=mlflow_uri, study_name="bob's", progress=False,
                          seed_from="none")
    assert main(["pareto", "bob's", "--tracking-uri", mlflow_uri]) == 0
    out = capsys.readouterr().out
    assert "Pareto frontier" in out and result.parent_run_id in out
    with pytest.raises(AutoqError, match="holds both a single and a double quote, and MLflow's filters could not find its runs"):
        autoq.search("digits-cnn", budget="4.5bits", n_trials=2, tracking_uri=mlflow_uri, study_name="""a'b"c""", progress=False)


def test_the_hint_of_another_experiment_names_it_and_its_command_works(mlflow_uri, capsys):
    autoq.search("digits-cnn", budget="4.5bits", n_trials=3, tracking_uri=mlflow_uri, study_name="elsewhere", experiment="my exp",
                 progress=False, seed_from="none")
    assert main(["runs", "--tracking-uri", mlflow_uri, "--experiment", "my exp"]) == 0
    pareto_hint, resume_hint = capsys.readouterr().out.splitlines()[-2:]
    assert pareto_hint.startswith(f"autoq pareto NAME --tracking-uri {mlflow_uri} --experiment 'my exp'   prints a frontier")
    command = shlex.split(pareto_hint.split("   ")[0].replace("NAME", "elsewhere"))
    assert main(command[1:]) == 0 and "Pareto frontier" in capsys.readouterr().out
    resume = shlex.split(resume_hint.split("   ")[0].replace("NAME", "elsewhere"))
    assert main([*resume[1:], "--n-trials", "4", "--no-progress"]) == 0 and "4 trials" in capsys.readouterr().out  # the study beside that store


def test_printed_commands_survive_a_store_path_with_a_space(tmp_path, _mlflow_template, monkeypatch, capsys):
    import shutil

    (tmp_path / "my dir").mkdir()
    shutil.copy(_mlflow_template, tmp_path / "my dir" / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'my dir' / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--model", "digits-cnn", "--budget", "4", "--n-trials", "2", "--seed-from", "none", "--tracking-uri", uri,
                 "--no-progress"]) == 0
    export = next(line for line in capsys.readouterr().out.splitlines() if "Export the best point:" in line)
    command = shlex.split(export.split("Export the best point:")[1].split("   (")[0])
    assert "'" in export and main([*command[1:], "--no-progress"]) == 0  # quoted as a shell reads it
    assert (tmp_path / "quantized" / "autoq_config.json").exists()



def test_pareto_after_a_uniform_trial_run_was_deleted_gives_that_as_the_reason_a_baseline_is_missing(mlflow_uri, capsys):
    """It blamed the strategy ('proposed no others, or the search stopped before them') for a baseline the search had
    evaluated, whose run was deleted since."""
    from mlflow.tracking import MlflowClient

    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=8, tracking_uri=mlflow_uri, progress=False, seed_from="none")
    evaluated, within = result.uniform_coverage
    assert evaluated == within and 2 <= evaluated < len(result.points)
    MlflowClient(mlflow_uri).delete_run(result.uniform_points[0].run_id)
    assert main(["pareto", result.parent_run_id, "--tracking-uri", mlflow_uri]) == 0
    out = capsys.readouterr().out
    assert f"Only {within - 1} of the {within} uniform assignments within the budget {'was' if within == 2 else 'were'} evaluated (1 of its trial runs is deleted in " \
           "MLflow, and this reads the runs left)" in out, out
    assert "the strategy proposed no others" not in out
    for point in result.uniform_points[1:]:  # all of them: none left to be the best uniform one
        MlflowClient(mlflow_uri).delete_run(point.run_id)
    assert main(["pareto", result.parent_run_id, "--tracking-uri", mlflow_uri]) == 0
    out = capsys.readouterr().out
    assert f"No uniform assignment is among the trial runs left ({within} of its trial runs are deleted in MLflow)" in out, out
    assert "the strategy proposed none" not in out


def test_pareto_of_a_search_that_evaluated_no_baseline_does_not_blame_its_deleted_runs(mlflow_uri, capsys):
    """The random strategy proposed no uniform assignment; one of its mixes' runs deleted, the summary said none was
    left among the runs, as if the deleted one had been a baseline."""
    from mlflow.tracking import MlflowClient

    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=3, strategy="random", tracking_uri=mlflow_uri, progress=False)
    assert not result.uniform_points
    MlflowClient(mlflow_uri).delete_run(result.points[0].run_id)
    assert main(["pareto", result.parent_run_id, "--tracking-uri", mlflow_uri]) == 0
    out = capsys.readouterr().out
    assert "No uniform assignment was evaluated (none fits this budget, the space has none, or the strategy proposed none)." in out, out


def test_pareto_after_the_best_trial_run_was_deleted_prints_a_command_that_exports_its_best(tmp_path, mlflow_uri, monkeypatch, capsys):
    """It printed the parent run's export, which exports frontier.json's best, whose deleted run it refuses: the summary
    showed another best and named a command that failed."""
    from mlflow.tracking import MlflowClient

    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=6, tracking_uri=mlflow_uri, progress=False, seed_from="none")
    client = MlflowClient(mlflow_uri)
    client.delete_run(result.best.run_id)
    monkeypatch.chdir(tmp_path)
    assert main(["pareto", result.parent_run_id, "--tracking-uri", mlflow_uri]) == 0
    out = capsys.readouterr().out
    best_trial = int(out.split("Best within budget: trial ")[1].split(",")[0])
    assert best_trial != result.best.trial
    # its counts fell with no reason given ('Only 1 of the 2 uniform assignments ... the search stopped before them')
    assert out.startswith(f"1 of the search's {len(result.points)} evaluated trial runs are deleted in MLflow: this is the frontier of "
                          f"the {len(result.points) - 1} left")
    export = next(line for line in out.splitlines() if "Export the best point:" in line)
    command = shlex.split(export.split("Export the best point:")[1].split("   (")[0])
    code, printed = main([*command[1:], "--no-progress"]), capsys.readouterr()
    assert code == 0 and f"trial {best_trial} (run " in printed.out + printed.err, printed.err

    client.delete_run(result.parent_run_id)  # the search's own run: its frontier printed, with an export the run refuses
    assert main(["pareto", result.parent_run_id, "--tracking-uri", mlflow_uri]) == 2
    assert (f"MLflow run {result.parent_run_id!r} is deleted; restore it first (MLFLOW_TRACKING_URI={mlflow_uri} mlflow runs restore "
            f"--run-id {result.parent_run_id}") in capsys.readouterr().err
    assert main(["pareto", result.study_name, "--tracking-uri", mlflow_uri]) == 2  # by its name: deleted too, not 'no search named'
    assert (f"the search {result.study_name!r} in experiment 'autoq' is deleted (MLflow run {result.parent_run_id}); restore it first"
            in capsys.readouterr().err)
    client.restore_run(result.parent_run_id)
    assert main(["pareto", result.parent_run_id, "--tracking-uri", mlflow_uri]) == 0


def test_pareto_of_a_search_that_did_not_finish_says_so_and_names_a_run_that_exports(mlflow_uri, capsys):
    """A search killed with kill -9 leaves its parent run RUNNING without frontier files: pareto claimed them, printed
    nan for what the search had not logged, and suggested exporting the parent run, which fails."""
    import dataclasses

    from mlflow.artifacts import download_artifacts
    from mlflow.tracking import MlflowClient

    from autoq.engine import format_summary
    from autoq.tracking.runs import resume_hint

    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=4, tracking_uri=mlflow_uri, progress=False)
    client = MlflowClient(mlflow_uri)
    client.update_run(result.parent_run_id, status="KILLED")  # Ctrl-C: the frontier of the trials so far is logged
    assert main(["pareto", result.parent_run_id, "--tracking-uri", mlflow_uri]) == 0
    out = capsys.readouterr().out
    assert "did not finish (MLflow status KILLED)" in out and "(frontier.csv, frontier.png, pareto=true tags)" in out
    client.update_run(result.parent_run_id, status="RUNNING")  # kill -9: no frontier files
    Path(download_artifacts(artifact_uri=client.get_run(result.parent_run_id).info.artifact_uri)).joinpath("frontier.csv").unlink()
    assert main(["pareto", result.parent_run_id, "--tracking-uri", mlflow_uri]) == 0
    out = capsys.readouterr().out
    assert f"Search {result.study_name!r} did not finish (MLflow status RUNNING)" in out and "holds no frontier files yet" in out
    assert f"Continue it: resume the search (unless it still runs on another machine) (autoq search --resume {result.study_name} --tracking-uri {mlflow_uri} --storage {result.storage})" in out
    assert f"Continue it: {resume_hint(client.get_run(result.parent_run_id), mlflow_uri)}." in out  # a Ray search's options too
    assert "if it was killed, autoq search --resume" in out
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a live process runs it: it was not killed
    try:
        result.study().set_user_attr(SESSION_ATTR, {"host": socket.gethostname(), "pid": alive.pid})
        assert main(["pareto", result.parent_run_id, "--tracking-uri", mlflow_uri]) == 0
        assert f"Search {result.study_name!r} is still running (process {alive.pid} on this machine)" in capsys.readouterr().out
    finally:
        alive.kill()
        alive.wait()
    assert f"--run-id {result.best.run_id}" in out and f"--run-id {result.parent_run_id}" not in out
    cut = format_summary(dataclasses.replace(result, reference_quality=float("nan"), eval_seconds=float("nan")), finished=False)
    assert "unquantized = not recorded" in cut and "nan" not in cut


def test_runs_marks_a_running_search_whose_process_is_gone(mlflow_uri, capsys):
    """kill -9 leaves the parent run RUNNING in MLflow: 'autoq runs' listed a search killed days ago as running."""
    from mlflow.tracking import MlflowClient

    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=2, tracking_uri=mlflow_uri, progress=False, seed_from="none")
    MlflowClient(mlflow_uri).update_run(result.parent_run_id, status="RUNNING")  # what kill -9 leaves
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        result.study().set_user_attr(SESSION_ATTR, {"host": socket.gethostname(), "pid": process.pid})
        assert main(["runs", "--tracking-uri", mlflow_uri]) == 0
        out = capsys.readouterr().out
        row = next(line for line in out.splitlines() if line.startswith(result.study_name))
        assert " RUNNING " in row and "RUNNING*" not in out  # a live process runs it
    finally:
        process.kill()
        process.wait()
    assert main(["runs", "--tracking-uri", mlflow_uri]) == 0  # the process is gone: killed
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith(result.study_name))
    header = next(line for line in out.splitlines() if line.startswith("study name"))
    assert row.index("RUNNING*") == header.index("status")
    assert "* RUNNING in MLflow, but its process on this machine is gone" in out


def test_a_search_that_ends_between_the_reads_of_runs_and_pareto_is_not_called_killed(mlflow_uri, capsys, monkeypatch):
    """A search finishes its MLflow run, then ends its session: a listing that read the run as RUNNING before and the
    session as ended after said 'RUNNING*' (its process gone: resume it), and pareto 'did not finish'."""
    from mlflow.tracking import MlflowClient

    import autoq.engine.sessions as sessions

    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=2, tracking_uri=mlflow_uri, progress=False, seed_from="none")
    client = MlflowClient(mlflow_uri)

    def finishing(*args):  # the run is read as RUNNING; the search finishes it as its session is read
        client.set_terminated(result.parent_run_id, "FINISHED")
        return real(*args)

    for name, reader in (("stopped_here", "runs"), ("running_pid", "pareto")):
        client.update_run(result.parent_run_id, status="RUNNING")
        real = getattr(sessions, name)
        monkeypatch.setattr(sessions, name, finishing)
        assert main([reader, *([result.study_name] if reader == "pareto" else []), "--tracking-uri", mlflow_uri]) == 0
        out = capsys.readouterr().out
        assert "RUNNING" not in out and "did not finish" not in out and "Continue it" not in out, out
        assert f"{result.study_name}  FINISHED " in out or reader == "pareto"
        monkeypatch.setattr(sessions, name, real)


def test_runs_offers_no_resume_for_searches_that_kept_no_storage(tmp_path, mlflow_uri, capsys):
    options = dict(budget="4.5bits", n_trials=2, tracking_uri=mlflow_uri, progress=False, seed_from="none")
    autoq.search("digits-cnn", storage=None, **options)
    assert main(["runs", "--tracking-uri", mlflow_uri]) == 0
    out = capsys.readouterr().out
    assert "autoq search --resume" not in out and "none can be resumed: they ran with --storage none" in out
    autoq.search("digits-cnn", storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="kept", **options)  # one that can be
    assert main(["runs", "--tracking-uri", mlflow_uri]) == 0
    out = capsys.readouterr().out
    assert "continues a search (not those run with --storage none: they kept no Optuna storage)." in out  # optuna.db beside the store


def test_runs_counts_the_trials_of_a_search_killed_before_its_summary(mlflow_uri, capsys):
    """kill -9 before the end leaves no summary metrics: the row said 'trials -  best -' while pareto reported 4 trials."""
    from mlflow.tracking import MlflowClient

    from autoq.tracking import STUDY_TAG, TRIAL_TAG

    client = MlflowClient(mlflow_uri)
    experiment = client.create_experiment("autoq")
    parent = client.create_run(experiment, tags={"autoq.kind": "search", STUDY_TAG: "killed"}).info.run_id
    for trial, quality in ((0, 0.5), (1, 0.75), (1, 0.75)):  # trial 1 logged twice (a retry): counted once
        child = client.create_run(experiment, tags={"mlflow.parentRunId": parent, TRIAL_TAG: str(trial)}).info.run_id
        client.log_metric(child, "quality", quality)
        client.set_terminated(child)
    assert main(["runs", "--tracking-uri", mlflow_uri]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("killed"))
    assert row.split()[4:6] == ["2", "0.7500"], row
    # a first session's summary, under a resume that runs (or was killed): its count and best were shown, not the trials'
    client.log_metric(parent, "n_evaluated", 1)
    client.log_metric(parent, "best_quality", 0.5)
    assert main(["runs", "--tracking-uri", mlflow_uri]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("killed"))
    assert row.split()[4:6] == ["2", "0.7500"], row
    client.set_terminated(parent)  # ended: its summary holds
    assert main(["runs", "--tracking-uri", mlflow_uri]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("killed"))
    assert row.split()[4:6] == ["1", "0.5000"], row


def test_pareto_of_a_search_whose_every_trial_failed_says_so_with_the_first_error(tmp_path, mlflow_uri, capsys):
    """It said "has no finished trial yet", as if the search were still to run: every trial had failed, and why was
    in the trial runs."""
    import pytest
    import torch
    from torch import nn

    from autoq.errors import AutoqError, AutoqWarning

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 8)).eval()
    calls = [0]

    def evaluate(m: nn.Module) -> float:  # the unquantized reference scores, every quantized trial raises
        calls[0] += 1
        if calls[0] > 1:
            raise RuntimeError("a broken metric")
        return 1.0

    with pytest.raises(AutoqError, match="every trial failed"), pytest.warns(AutoqWarning, match="trial 0 failed"):
        autoq.search(model, [torch.randn(8, 32)], evaluate, budget="5bits", n_trials=3, max_retries=0, tracking_uri=mlflow_uri,
                     storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="all-failed", progress=False, seed_from="none")
    capsys.readouterr()
    assert main(["pareto", "all-failed", "--tracking-uri", mlflow_uri]) == 2
    err = capsys.readouterr().err
    assert "search 'all-failed' failed: every trial failed (3); the first error: RuntimeError: a broken metric" in err


def test_pareto_of_a_search_with_no_finished_trial_says_how_to_resume_it(tmp_path, mlflow_uri, capsys):
    """A search stopped before its first trial finished: pareto said only "no finished trial yet", where export said
    how to go on; both now give the resume command (or, while its process runs, to wait)."""
    from mlflow.tracking import MlflowClient

    from autoq.tracking.mlflow_logger import STORAGE_TAG, STUDY_TAG

    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("autoq") or client.get_experiment(client.create_experiment("autoq"))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    run = client.create_run(experiment.experiment_id, tags={"autoq.kind": "search", STUDY_TAG: "cut-short", STORAGE_TAG: storage}).info.run_id
    client.log_param(run, "budget", "4.5bits")  # what a search logs as it starts, before any trial
    client.log_param(run, "study_name", "cut-short")
    client.set_terminated(run, status="KILLED")
    assert main(["pareto", "cut-short", "--tracking-uri", mlflow_uri]) == 2
    err = capsys.readouterr().err
    assert "has no finished trial yet (MLflow status KILLED)" in err
    assert f"resume the search (autoq search --resume cut-short --tracking-uri {mlflow_uri} --storage {storage})" in err


def test_the_resume_hint_holds_what_a_resume_needs_beyond_the_study(tmp_path, mlflow_uri):
    """The hint export and pareto give: a Ray search's backend and workers (without them it goes on in-process), the
    plug-ins, the Python call for a model passed from Python (a command would load the default model), credentials."""
    from mlflow.tracking import MlflowClient

    from autoq.tracking.mlflow_logger import STORAGE_TAG, STUDY_TAG
    from autoq.tracking.runs import resume_hint

    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("autoq") or client.get_experiment(client.create_experiment("autoq"))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"

    def stopped(**params):
        run = client.create_run(experiment.experiment_id, tags={"autoq.kind": "search", STUDY_TAG: "s", STORAGE_TAG: storage}).info.run_id
        for key, value in params.items():
            client.log_param(run, key, value)
        client.set_terminated(run, status="KILLED")
        return client.get_run(run)

    ray = resume_hint(stopped(model_source="digits-cnn", backend="ray", workers=3, plugins="myplug.py"), mlflow_uri)
    assert f"autoq search --resume s --tracking-uri {mlflow_uri} --storage {storage} --backend ray --workers 3 --plugin myplug.py" in ray
    assert "--address, --cpus-per-trial and --gpus-per-trial as the search had them" in ray
    python = resume_hint(stopped(model_source="none", backend="optuna"), mlflow_uri)
    assert "autoq search" not in python and f"autoq.search call with resume=True, study_name='s', storage={storage!r}" in python
    remote = resume_hint(stopped(model_source="digits-cnn", backend="optuna"), "https://alice:secret@mlflow.example:5000")
    assert "secret" not in remote and "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in remote
    assert "password in place of ***" not in remote  # a SQLite storage has none
    storage = "postgresql://u:***@db/optuna"  # as MLflow holds a database storage: its password masked
    masked = resume_hint(stopped(model_source="digits-cnn", backend="optuna"), mlflow_uri)
    assert f"--storage '{storage}', with the storage's password in place of ***" in masked


def test_runs_and_pareto_of_deleted_runs_and_experiments_say_so_and_name_the_store(tmp_path, mlflow_uri, capsys):
    """A search logged with --storage elsewhere was offered a resume command without it (which looked beside the store);
    a search whose every trial run was deleted had 'no finished trial yet' and was to be resumed; a deleted experiment
    listed 'no searches'; and the restore commands named no store (run elsewhere, they made a ./mlflow.db)."""
    from mlflow.tracking import MlflowClient

    storage = f"sqlite:///{tmp_path / 'elsewhere' / 'o.db'}"
    (tmp_path / "elsewhere").mkdir()
    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=3, tracking_uri=mlflow_uri, storage=storage, experiment="e",
                          study_name="s", progress=False, seed_from="none")
    assert main(["runs", "--tracking-uri", mlflow_uri, "--experiment", "e"]) == 0
    assert "autoq search --resume NAME" in (out := capsys.readouterr().out) and "--storage URL" in out

    client = MlflowClient(mlflow_uri)
    for point in result.points:
        client.delete_run(point.run_id)
    assert main(["pareto", "s", "--tracking-uri", mlflow_uri, "--experiment", "e"]) == 2
    err = capsys.readouterr().err
    assert "evaluated 3 trial(s), and every one of their MLflow runs is deleted" in err and "no finished trial yet" not in err

    client.delete_experiment(client.get_experiment_by_name("e").experiment_id)
    for command in (["runs"], ["pareto", "s"]):
        assert main([*command, "--tracking-uri", mlflow_uri, "--experiment", "e"]) == 2
        err = capsys.readouterr().err
        assert "experiment 'e' is deleted" in err
        assert f"MLFLOW_TRACKING_URI={shlex.quote(mlflow_uri)} mlflow experiments restore --experiment-id" in err


def _search_run(client, experiment_id: str, name: str, *, status: str = "KILLED", metrics: dict | None = None) -> str:
    """A search's parent run as a search logs it, with no trial yet (kill -9 before its first trial ended): the params
    it logs as it starts."""
    return logged_search(client, experiment_id, name, status, params={"budget": "4.5bits", "study_name": name}, metrics=metrics)


def test_runs_right_aligns_the_trials_and_best_columns(mlflow_uri, capsys):
    """The numbers' columns are right-aligned, the header over them too: a best of '-' sits under the 't' of 'best'."""
    from mlflow.tracking import MlflowClient

    from autoq.tracking import TRIAL_TAG

    client = MlflowClient(mlflow_uri)
    experiment = client.create_experiment("autoq")
    parent = _search_run(client, experiment, "scored", status="RUNNING")
    child = client.create_run(experiment, tags={"mlflow.parentRunId": parent, TRIAL_TAG: "0"}).info.run_id
    client.log_metric(child, "quality", 0.75)
    client.set_terminated(child)
    client.set_terminated(parent, "KILLED")
    _search_run(client, experiment, "unscored")
    assert main(["runs", "--tracking-uri", mlflow_uri]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("study name"))
    scored, unscored = (next(line for line in lines if line.startswith(name)) for name in ("scored", "unscored"))
    end = header.index("best") + len("best")
    assert scored[end - len("0.7500"):end] == "0.7500" and unscored[end - 1] == "-", (header, scored, unscored)


def test_pareto_of_a_killed_search_with_failed_trials_says_how_to_resume_it(mlflow_uri, capsys):
    """'Every trial failed' is a FAILED search's, with failures counted: a KILLED one whose trials failed so far was not
    run out (resume it), and a FAILED one with no n_failed failed for another reason, not '(0)' failed trials."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    experiment = client.create_experiment("autoq")
    _search_run(client, experiment, "stopped", status="KILLED", metrics={"n_failed": 2})
    _search_run(client, experiment, "broken", status="FAILED")
    for name, status in (("stopped", "KILLED"), ("broken", "FAILED")):
        assert main(["pareto", name, "--tracking-uri", mlflow_uri]) == 2
        err = capsys.readouterr().err
        assert f"search {name!r} has no finished trial yet (MLflow status {status})" in err and "every trial failed" not in err, err


def test_pareto_of_a_search_whose_every_trial_failed_names_the_first_error(mlflow_uri, capsys):
    """The first trial's error is named (the later ones often follow from it), not the last one's."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    experiment = client.create_experiment("autoq")
    parent = _search_run(client, experiment, "failing", status="RUNNING", metrics={"n_failed": 2})
    for trial, error in enumerate(("ValueError: first", "RuntimeError: second")):
        child = client.create_run(experiment, start_time=1000 * (trial + 1), tags={"mlflow.parentRunId": parent, "error": error}).info.run_id
        client.set_terminated(child, "FAILED")
    client.set_terminated(parent, "FAILED")
    assert main(["pareto", "failing", "--tracking-uri", mlflow_uri]) == 2
    err = capsys.readouterr().err
    assert "search 'failing' failed: every trial failed (2); the first error: ValueError: first;" in err, err


def test_pareto_names_another_experiment_that_holds_two_searches_of_the_name(mlflow_uri, capsys):
    """An experiment holding two searches of the name asked for holds it too: its hint is given, not left out."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    client.create_experiment("autoq")
    pipe = client.create_experiment("my pipe")
    for _ in range(2):
        _search_run(client, pipe, "twice")
    assert main(["pareto", "twice", "--tracking-uri", mlflow_uri]) == 2
    assert "it is in experiment 'my pipe': add --experiment 'my pipe'" in capsys.readouterr().err
