"""Stores edited after the search, by hand or by a tool: a trial run's tag changed in the MLflow UI, an artifact
edited, a study attribute of another type. Each reader says what it found, and a resume still finishes."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from helpers import run_main
from mlflow.tracking import MlflowClient

import autoq
from autoq.errors import AutoqError, AutoqWarning
from autoq.tracking.mlflow_logger import TRIAL_TAG


@pytest.fixture
def search(tmp_path, mlflow_uri):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    data = [torch.randn(8, 16) for _ in range(2)]
    options = dict(budget="6bits", n_trials=5, seed_from="none", tracking_uri=mlflow_uri, storage=f"sqlite:///{tmp_path / 'optuna.db'}",
                   study_name="s", progress=False)
    return model, data, options, autoq.search(model, data, **options)


def test_a_trial_runs_tag_edited_in_the_ui_leaves_that_run_out_with_a_warning(search, mlflow_uri):
    """int() of the tag raised in `autoq pareto` and `SearchResult.from_mlflow`: a traceback for every reader."""
    *_, result = search
    client, edited = MlflowClient(mlflow_uri), result.points[-1]
    client.set_tag(edited.run_id, TRIAL_TAG, f"trial-{edited.trial}")
    with pytest.warns(AutoqWarning, match=rf"1 finished trial run\(s\) of search run {result.parent_run_id} have no trial number .*"
                                          rf"left out: {edited.run_id}"):
        read = autoq.SearchResult.from_mlflow(result.parent_run_id, mlflow_uri)
    assert [p.trial for p in read.points] == [p.trial for p in result.points[:-1]]


def test_an_edited_assignment_file_is_named_by_its_trial_and_run(search, mlflow_uri):
    """'assignment layer '0': cannot parse ...': every trial has that layer, and the message named neither run nor file."""
    *_, result = search
    point = result.points[1]
    artifacts = Path(MlflowClient(mlflow_uri).get_run(point.run_id).info.artifact_uri.removeprefix("file://"))
    (artifacts / "assignment.json").write_text((artifacts / "assignment.json").read_text().replace("-ch-", "-zz-"))
    with pytest.raises(AutoqError, match=rf"^trial {point.trial} \(MLflow run {point.run_id}\) has an assignment.json autoq cannot read"):
        autoq.SearchResult.from_mlflow(result.parent_run_id, mlflow_uri)


def test_a_wall_time_attribute_of_another_type_does_not_stop_a_resume(search, tmp_path):
    """float() of it raised after the resume's trials had run, its MLflow run left RUNNING: no resume ever finished."""
    model, data, options, _ = search
    study = optuna.load_study(study_name="s", storage=options["storage"])
    study.set_user_attr("autoq.wall_seconds", "3.5 s")
    again = autoq.search(model, data, resume=True, **{**options, "n_trials": 6})
    assert len(again.points) == 6 and again.wall_seconds > 0


@pytest.mark.parametrize(("edit", "named"), [
    ("settings as a JSON string", r"its study's 'autoq.settings' attribute is a str, where autoq stores an object of settings"),
    ("pins of 'none'", r"'pins' is 'none' \(autoq stores a list of \[layer pattern, choice\] pairs\)"),
    ("a budget of a number", r"'budget' is 4.5 \(autoq stores a string\)"),
])
def test_stored_settings_of_another_shape_are_named_on_resume(search, edit, named):
    """pins of "none" crashed the resume in the code that unpacked them; settings stored as a JSON string in dict();
    a budget stored as a number was blamed on the budget the resume passed."""
    model, data, options, _ = search
    study = optuna.load_study(study_name="s", storage=options["storage"])
    settings = dict(study.user_attrs["autoq.settings"])
    edited = {"settings as a JSON string": '{"budget": "6bits"}', "pins of 'none'": {**settings, "pins": "none"},
              "a budget of a number": {**settings, "budget": 4.5}}[edit]
    study.set_user_attr("autoq.settings", edited)
    with pytest.raises(AutoqError, match=rf"^search 's' cannot be read back: .*{named}.*start a new search"):
        autoq.search(model, data, resume=True, **options)


def test_stored_pins_of_another_shape_are_named_by_a_command_line_resume(search, tmp_path, capsys):
    """The command line unpacked each stored pin into --pin's form: "too many values to unpack", a traceback."""
    *_, options, _ = search
    study = optuna.load_study(study_name="s", storage=options["storage"])
    study.set_user_attr("autoq.settings", {**study.user_attrs["autoq.settings"], "pins": ["fc.*=int4"]})
    code, _, err = run_main("search", "--resume", "s", "--storage", options["storage"], "--tracking-uri", options["tracking_uri"],
                            cwd=tmp_path, capsys=capsys)
    assert code == 2 and "'pins' is ['fc.*=int4'] (autoq stores a list of [layer pattern, choice] pairs)" in err
    assert "Traceback" not in err


def test_a_search_whose_experiment_was_renamed_resumes_in_its_own_run(search, mlflow_uri, capsys):
    """Renaming an experiment in the MLflow UI made a resume create a new experiment of the old name and a second parent
    run there, which logged every kept trial again; the first run stayed behind, unfinished."""
    model, data, options, first = search
    client = MlflowClient(mlflow_uri)
    experiment_id = client.get_run(first.parent_run_id).info.experiment_id
    client.rename_experiment(experiment_id, "team-quant")
    experiments = {e.experiment_id for e in client.search_experiments()}
    capsys.readouterr()
    again = autoq.search(model, data, resume=True, **{**options, "n_trials": 7})
    assert again.parent_run_id == first.parent_run_id and len(again.points) == 7
    assert {e.experiment_id for e in client.search_experiments()} == experiments  # no new experiment of the old name
    assert "is named 'team-quant' now (renamed)" in capsys.readouterr().err


@pytest.mark.parametrize("deleted", ["experiment", "run"])
def test_a_renamed_experiment_or_its_run_deleted_is_refused_as_without_the_rename(search, mlflow_uri, deleted):
    """Renamed and then deleted (or its run deleted), a resume made a second parent run in a new experiment of the old
    name, without a word, where without the rename it is refused with the restore command."""
    model, data, options, first = search
    client = MlflowClient(mlflow_uri)
    experiment_id = client.get_run(first.parent_run_id).info.experiment_id
    client.rename_experiment(experiment_id, "old")
    if deleted == "experiment":
        client.delete_experiment(experiment_id)
    else:
        client.delete_run(first.parent_run_id)
    experiments = {e.experiment_id for e in client.search_experiments(view_type=3)}  # active and deleted
    needle = (f"MLflow experiment 'old' .* is deleted in .*mlflow experiments restore --experiment-id {experiment_id}" if deleted == "experiment"
              else f"the MLflow run of search 's', '{first.parent_run_id}', is deleted; restore it")
    with pytest.raises(AutoqError, match=needle):
        autoq.search(model, data, resume=True, **{**options, "n_trials": 7})
    assert {e.experiment_id for e in client.search_experiments(view_type=3)} == experiments
