"""``autoq export --run-id``: a trial run's assignment, or a search run's best frontier point, exported and loaded."""

from __future__ import annotations

import json
import os

import pytest
import torch
from helpers import logged_trial

import autoq
from autoq.choice import Assignment
from autoq.cli import main
from autoq.export import CONFIG_NAME


@pytest.fixture(scope="module")
def searched(tmp_path_factory, _mlflow_template):
    import shutil

    folder = tmp_path_factory.mktemp("export-search")
    shutil.copy(_mlflow_template, folder / "mlflow.db")
    # the first convolution pinned to fp16: every point has a layer the export keeps unpacked
    return autoq.search("digits-cnn", budget="4.5bits", n_trials=4, tracking_uri=f"sqlite:///{folder / 'mlflow.db'}", storage=None, progress=False,
                        pins={"^0$": "fp16"})


def exported_assignment(out) -> Assignment:
    return Assignment.from_json(json.dumps(json.loads((out / CONFIG_NAME).read_text())["assignment"]))


def test_export_a_trial_run(searched, tmp_path, capsys, monkeypatch):
    point = searched.points[-1]
    out = tmp_path / "trial"
    monkeypatch.chdir(tmp_path)
    assert main(["export", "--run-id", point.run_id, "--tracking-uri", searched.tracking_uri, "--model", "digits-cnn", "--out", "trial"]) == 0
    assert sum(choice.weight.is_half for choice in point.assignment.values()) == 1
    printed = capsys.readouterr().out
    assert f"Exported 4 layers (3 packed, 1 kept in fp16) to {out.resolve()}:" in printed
    assert f"Load it:  model = autoq.load({str(out.resolve())!r})" in printed  # not 'trial', which loads from this folder only
    assert exported_assignment(out) == point.assignment
    model = autoq.load(out)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_export_a_search_run_takes_its_best_point(searched, tmp_path, capsys):
    out = tmp_path / "best"
    assert main(["export", "--run-id", searched.parent_run_id, "--tracking-uri", searched.tracking_uri, "--model", "digits-cnn", "--out", str(out)]) == 0
    assert exported_assignment(out) == searched.best.assignment
    err = capsys.readouterr().err
    assert "autoq export: 100%" in err and "Downloading" not in err  # autoq's bar (--no-progress turns it off), not MLflow's
    assert main(["export", "--run-id", searched.parent_run_id, "--tracking-uri", searched.tracking_uri, "--model", "digits-cnn",
                 "--out", str(out), "--no-progress"]) == 0
    assert "autoq export:" not in capsys.readouterr().err


def test_the_python_api_exports_by_run_id_too(searched, tmp_path):
    trial = searched.points[0]
    out = autoq.export("digits-cnn", trial.run_id, tmp_path / "trial", tracking_uri=searched.tracking_uri)
    assert exported_assignment(out) == trial.assignment
    best = autoq.export("digits-cnn", searched.parent_run_id, tmp_path / "best", tracking_uri=searched.tracking_uri)
    assert exported_assignment(best) == searched.best.assignment
    with pytest.raises(autoq.AutoqError, match="tracking_uri is for a point given as an MLflow run id"):
        autoq.export("digits-cnn", trial.assignment, tmp_path / "x", tracking_uri=searched.tracking_uri)


def test_export_takes_the_searched_model_from_the_run(searched, tmp_path, capsys):
    # the search loaded the built-in digits-cnn and logged it as model_source: without --model the export rebuilds it,
    # not the default MiniLM (whose layers the assignment does not name)
    out = tmp_path / "from-run"
    assert main(["export", "--run-id", searched.parent_run_id, "--tracking-uri", searched.tracking_uri, "--out", str(out), "--no-progress"]) == 0
    assert exported_assignment(out) == searched.best.assignment
    assert "of digits-cnn ..." in capsys.readouterr().err
    trial = searched.points[0]
    assert exported_assignment(autoq.export(None, trial.run_id, tmp_path / "api", tracking_uri=searched.tracking_uri)) == trial.assignment
    with pytest.raises(autoq.AutoqError, match="model=None takes the model a run searched"):
        autoq.export(None, trial.assignment, tmp_path / "x")


def test_a_search_of_a_module_needs_its_model_passed(tmp_path, _mlflow_template, capsys):
    import shutil

    shutil.copy(_mlflow_template, tmp_path / "mlflow.db")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    batches = [torch.randn(16, 64) for _ in range(4)]
    result = autoq.search(model, batches, budget="4.5bits", n_trials=2, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", storage=None,
                          progress=False)
    args = ["export", "--run-id", result.parent_run_id, "--tracking-uri", result.tracking_uri, "--out", str(tmp_path / "cli")]
    assert main(args) == 2
    assert "searched 'Sequential' given as a module" in capsys.readouterr().err and not (tmp_path / "cli").exists()
    out = autoq.export(model, result.parent_run_id, tmp_path / "api", tracking_uri=result.tracking_uri)
    assert exported_assignment(out) == result.best.assignment


def test_unknown_run_is_one_line_exit_2(searched, tmp_path, capsys):
    assert main(["export", "--run-id", "0" * 32, "--tracking-uri", searched.tracking_uri, "--model", "digits-cnn", "--out", str(tmp_path / "x")]) == 2
    assert "no MLflow run" in capsys.readouterr().err


def test_a_search_with_no_finished_trial_says_to_resume_it(searched, tmp_path, capsys):
    """Its frontier is empty: 'export one of its trial runs instead' pointed at trial runs it did not have."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(searched.tracking_uri)
    search = client.get_run(searched.parent_run_id)
    run = client.create_run(search.info.experiment_id, tags={"autoq.kind": "search", "autoq.study": "cut-short"}).info.run_id
    (tmp_path / "frontier.json").write_text("[]")
    client.log_artifact(run, str(tmp_path / "frontier.json"))
    assert main(["export", "--run-id", run, "--tracking-uri", searched.tracking_uri, "--model", "digits-cnn", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "has no finished trial yet" in err and "autoq search --resume cut-short" in err


def test_a_missing_store_is_refused_and_not_created(tmp_path, capsys):
    db = tmp_path / "elsewhere.db"
    assert main(["export", "--run-id", "0" * 32, "--tracking-uri", f"sqlite:///{db}", "--out", str(tmp_path / "x")]) == 2
    assert f"no MLflow store at {db}" in capsys.readouterr().err
    assert not db.exists()


def test_export_of_a_sequential_gptq_search_reruns_it_the_same_way(tmp_path, _mlflow_template):
    import shutil

    from helpers import same_tensors

    from autoq.export import WEIGHTS_NAME

    shutil.copy(_mlflow_template, tmp_path / "mlflow.db")
    space = tmp_path / "gptq.yaml"
    space.write_text('name: gptq\nrules:\n  - layers: ".*"\n    bits: [3, 4]\n    granularity: [channel]\n    methods: [gptq]\n')
    result = autoq.search("digits-cnn", budget="4bits", space=str(space), n_trials=2, sequential=True,
                          tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", storage=None, progress=False)
    out = tmp_path / "cli"
    assert main(["export", "--run-id", result.parent_run_id, "--tracking-uri", result.tracking_uri, "--model", "digits-cnn", "--out", str(out)]) == 0
    best = result.best.assignment
    assert exported_assignment(out) == best
    same = autoq.export("digits-cnn", best, tmp_path / "seq", sequential=True)
    flat = autoq.export("digits-cnn", best, tmp_path / "flat")
    assert same_tensors(out / WEIGHTS_NAME, same / WEIGHTS_NAME)  # the run's --sequential was read back
    assert not same_tensors(out / WEIGHTS_NAME, flat / WEIGHTS_NAME)


def _fake_trial(client, searched, assignment=None, parent=None, status="FINISHED", tags=None) -> str:
    """A child run as a search logs one (assignment.json, trial tag), in the searched store."""
    experiment = client.get_run(searched.parent_run_id).info.experiment_id
    return logged_trial(client, parent or searched.parent_run_id, assignment or searched.points[0].assignment, 99, status, tags, experiment)


def _export_error(run_id, searched, tmp_path, capsys, *extra) -> str:
    out = tmp_path / "never"
    assert main(["export", "--run-id", run_id, "--tracking-uri", searched.tracking_uri, "--out", str(out), *extra]) == 2
    assert not out.exists()  # refused before anything is made
    return capsys.readouterr().err


def test_runs_that_hold_no_point_to_export_are_refused(searched, tmp_path, capsys):
    """A FAILED trial, a deleted run, a run autoq did not log and a trial whose search run is gone all exported (or
    failed with a traceback): the failed one 'successfully', with no quality behind it."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(searched.tracking_uri)
    failed = _fake_trial(client, searched, status="FAILED", tags={"error": "Traceback ...\nRuntimeError: boom"})
    assert "trial 99 (run " in (err := _export_error(failed, searched, tmp_path, capsys)) and "did not finish (MLflow status FAILED): RuntimeError: boom" in err
    deleted = _fake_trial(client, searched)
    client.delete_run(deleted)
    assert (f"is deleted; restore it first (MLFLOW_TRACKING_URI={searched.tracking_uri} mlflow runs restore --run-id {deleted}"
            in _export_error(deleted, searched, tmp_path, capsys))
    foreign = _fake_trial(client, searched)
    client.delete_tag(foreign, "autoq.trial")
    assert "is not an autoq trial or search run" in _export_error(foreign, searched, tmp_path, capsys)
    orphan = _fake_trial(client, searched, parent="f" * 32)
    assert f"belongs to search run {'f' * 32!r}, which is no longer in the store" in _export_error(orphan, searched, tmp_path, capsys)


def test_another_model_than_the_runs_names_the_one_searched(searched, tmp_path, capsys):
    """It said 'another model; export with the searched weights (or pass the point's .assignment ...)': not which model,
    nor that leaving --model out exports with it, and .assignment has no command line."""
    err = _export_error(searched.best.run_id, searched, tmp_path, capsys, "--model", "minilm")
    assert "changed since, or another model; the search ran on 'digits-cnn': export with it (on the command line, leave --model out)" in err
    assert "autoq.export(model, point.assignment, ...) in Python" in err


def test_a_search_whose_best_trial_run_was_deleted_is_refused(searched, tmp_path, capsys):
    """Deleted in the UI, the best point was still exported from the search's frontier.json, while autoq pareto (which
    reads the runs) showed another best and exporting that trial by its id was refused."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(searched.tracking_uri)
    best = searched.best.run_id
    client.delete_run(best)
    try:
        err = _export_error(searched.parent_run_id, searched, tmp_path, capsys)
        assert (f"trial {searched.best.trial} (run {best}) is deleted in MLflow; restore it (MLFLOW_TRACKING_URI={searched.tracking_uri} "
                f"mlflow runs restore --run-id {best})" in err)
    finally:
        client.restore_run(best)


def test_a_search_whose_best_trial_run_was_garbage_collected_is_refused_without_a_restore(tmp_path, capsys, _mlflow_template):
    """Deleted and then removed for good ('mlflow gc'), the run was still said to be restorable, and the restore command
    given failed with "Run ... not found"."""
    import shutil
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    shutil.copy(_mlflow_template, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=3, tracking_uri=uri, storage=None, progress=False)
    MlflowClient(uri).delete_run(result.best.run_id)
    gc = [sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", uri, "--run-ids", result.best.run_id]
    subprocess.run(gc, check=True, capture_output=True, timeout=300, env={**os.environ, "MLFLOW_TRACKING_URI": uri})
    err = _export_error(result.parent_run_id, result, tmp_path, capsys)
    assert f"(run {result.best.run_id}) was deleted from MLflow for good ('mlflow gc'); export another point" in err
    assert "restore" not in err


def test_a_search_killed_before_its_frontier_names_the_resume(searched, tmp_path, capsys):
    """kill -9 left the parent RUNNING without frontier.json: 'is it an autoq trial or search run?' it said."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(searched.tracking_uri)
    experiment = client.get_run(searched.parent_run_id).info.experiment_id
    run = client.create_run(experiment, tags={"autoq.kind": "search", "autoq.study": "killed-9"}).info.run_id
    err = _export_error(run, searched, tmp_path, capsys)
    assert ("did not finish (MLflow status RUNNING) and logged no frontier; resume the search (unless it still runs on another "
            f"machine) (autoq search --resume killed-9 --tracking-uri {searched.tracking_uri}") in err  # whole: it works from any folder
    client.log_param(run, "optuna_storage", "memory")  # --storage none: no resume to advise
    err = _export_error(run, searched, tmp_path, capsys)
    assert "it kept no Optuna storage (--storage none), so it cannot be resumed" in err and "--resume" not in err


def test_a_search_still_running_is_waited_for_not_resumed(searched, tmp_path, capsys):
    """Exporting a search a live process runs advised resuming it, which autoq refuses while it runs; and a resumed
    search's parent, running again with its last session's frontier.json, exported that point without a word."""
    import subprocess
    import sys

    import optuna
    from mlflow.tracking import MlflowClient

    from autoq.engine.sessions import SESSION_ATTR

    client = MlflowClient(searched.tracking_uri)
    experiment = client.get_run(searched.parent_run_id).info.experiment_id
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="live", storage=storage, directions=["maximize", "minimize"])
    run = client.create_run(experiment, tags={"autoq.kind": "search", "autoq.study": "live"}).info.run_id
    client.log_param(run, "optuna_storage", storage)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        study.set_user_attr(SESSION_ATTR, {"host": __import__("socket").gethostname(), "pid": alive.pid})
        err = _export_error(run, searched, tmp_path, capsys)
        assert f"logged no frontier; it is still running (process {alive.pid} on this machine): wait for it to finish" in err
    finally:
        alive.kill()
        alive.wait()
    client.update_run(searched.parent_run_id, status="RUNNING")  # resumed: its frontier.json is its last session's
    try:
        out = tmp_path / "resumed"
        assert main(["export", "--run-id", searched.parent_run_id, "--tracking-uri", searched.tracking_uri, "--out", str(out)]) == 0
        assert "as its last finished session logged it: the search is running again" in capsys.readouterr().err
    finally:
        client.update_run(searched.parent_run_id, status="FINISHED")


def test_an_artifact_cut_short_is_a_clear_error(searched, tmp_path, capsys):
    """A frontier.json read while the search wrote it (MLflow copies an artifact in place) was a JSONDecodeError traceback."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(searched.tracking_uri)
    experiment = client.get_run(searched.parent_run_id).info.experiment_id
    run = client.create_run(experiment, tags={"autoq.kind": "search", "autoq.study": "cut"}).info.run_id
    (tmp_path / "frontier.json").write_text('[{"trial": 1, "quality"')
    client.log_artifact(run, str(tmp_path / "frontier.json"))
    err = _export_error(run, searched, tmp_path, capsys)
    assert f"the frontier.json of MLflow run {run!r} cannot be read" in err and "try again in a moment" in err


def test_a_plugin_method_names_the_plugins_the_search_ran_with(searched, tmp_path, capsys):
    """The export command in the run's description failed with 'unknown PTQ method': the plug-in was recorded nowhere."""
    from mlflow.tracking import MlflowClient

    from autoq.choice import LayerChoice
    from autoq.quant import QuantSpec

    client = MlflowClient(searched.tracking_uri)
    experiment = client.get_run(searched.parent_run_id).info.experiment_id
    parent = client.create_run(experiment, tags={"autoq.kind": "search"}).info.run_id
    client.log_param(parent, "plugins", "/home/me/my\\ plug.py")
    layers = list(searched.points[0].assignment)
    mine = Assignment.from_dict({name: LayerChoice(QuantSpec(4, "channel"), "boom") for name in layers})
    err = _export_error(_fake_trial(client, searched, mine, parent=parent), searched, tmp_path, capsys)
    assert "uses PTQ method(s) 'boom', which the search's plug-ins registered; add --plugin '/home/me/my plug.py'" in err
    err = _export_error(_fake_trial(client, searched, mine), searched, tmp_path, capsys)
    assert "which no loaded plug-in registers; add --plugin MODULE_OR_FILE" in err
