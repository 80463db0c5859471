"""An export logged as an MLflow model from its run (``--log-to-run``), registered, and loaded back by its URIs."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import requests
import torch
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient
from torch import nn

import autoq
from autoq.choice import Assignment, LayerChoice
from autoq.cli import main
from autoq.export.config import CONFIG_NAME, WEIGHTS_NAME
from autoq.export.mlflow_store import ARTIFACT_PATH, EXPORTED_TAG, MODEL_TYPE, check_registered_name, is_artifact_uri, log_export
from autoq.model import find_layers


@pytest.fixture(scope="module")
def searched(tmp_path_factory, _mlflow_template):
    folder = tmp_path_factory.mktemp("logged-export")
    shutil.copy(_mlflow_template, folder / "mlflow.db")
    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=4, tracking_uri=f"sqlite:///{folder / 'mlflow.db'}", storage=None,
                          progress=False)
    assert len(result.points) == 4  # the tests below each take their own point
    return result


@pytest.mark.parametrize(("location", "uri"), [("runs:/abc/quantized_model", True), ("models:/m/1", True), ("s3://b/k", True),
                                               ("mlflow-artifacts:/x", True), ("out/model", False), ("C:/models/out", False),
                                               (Path("runs:/abc"), False)])
def test_what_counts_as_an_artifact_uri(location, uri):
    assert is_artifact_uri(location) is uri


def _logged_models(client: MlflowClient, run_id: str) -> list:
    experiment = client.get_run(run_id).info.experiment_id
    return [m for m in client.search_logged_models(experiment_ids=[experiment]) if m.source_run_id == run_id]


def _histories(client: MlflowClient, run_id: str) -> dict[str, list[tuple]]:
    """Each metric's history of the run itself (points logged for a model left out)."""
    return {key: sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, key) if m.model_id is None)
            for key in client.get_run(run_id).data.metrics}


def test_cli_logs_the_export_as_an_mlflow_model_of_its_run(searched, tmp_path, capsys, monkeypatch):
    trial = searched.points[-1]
    out = tmp_path / "local"
    MlflowClient(searched.tracking_uri).set_tag(trial.run_id, "latency_source", "estimate:roofline:h100")  # as --device h100 tags it
    before = _histories(MlflowClient(searched.tracking_uri), trial.run_id)
    assert main(["export", "--run-id", trial.run_id, "--tracking-uri", searched.tracking_uri, "--out", str(out), "--log-to-run", "--no-progress"]) == 0
    uri = f"runs:/{trial.run_id}/{ARTIFACT_PATH}"
    client = MlflowClient(searched.tracking_uri)
    [logged] = _logged_models(client, trial.run_id)
    printed = capsys.readouterr().out
    assert f"Logged as an MLflow model of run {trial.run_id} (models:/{logged.model_id})" in printed
    assert f"autoq.load({uri!r}, tracking_uri=" in printed and f"mlflow.pyfunc.load_model('models:/{logged.model_id}')" in printed
    assert "Registered as" not in printed  # no --registered-model-name: nothing was registered
    spaced = tmp_path / "my runs"  # the store in a folder with a space: the printed variable is quoted as a shell needs it
    spaced.mkdir()
    from autoq.tracking.mlflow_logger import sqlite_path

    shutil.copy(sqlite_path(searched.tracking_uri), spaced / "mlflow.db")
    monkeypatch.chdir(spaced)  # and named relative to this folder: printed in full, so that the lines work from any other
    assert main(["export", "--run-id", trial.run_id, "--tracking-uri", "sqlite:///mlflow.db", "--out", str(tmp_path / "again"),
                 "--log-to-run", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"tracking_uri='sqlite:///{spaced / 'mlflow.db'}')" in printed
    assert f"# with MLFLOW_TRACKING_URI='sqlite:///{spaced / 'mlflow.db'}'" in printed
    assert (logged.name, logged.status, logged.model_type) == (ARTIFACT_PATH, LoggedModelStatus.READY, MODEL_TYPE)
    run = client.get_run(trial.run_id)
    assert run.data.tags[EXPORTED_TAG] == ARTIFACT_PATH
    assert [o.model_id for o in run.outputs.model_outputs] == [logged.model_id]  # the run page lists it
    assert logged.params == run.data.params  # the assignment it holds, as the run logged it
    assert logged.tags.get("latency_source") == "estimate:roofline:h100"  # an estimated latency_ms is labelled there too
    assert {m.key: m.value for m in logged.metrics} == run.data.metrics  # quality, bits, size: the Models tab's columns
    assert _histories(client, trial.run_id) == before  # the run's own history gained no point (one dated 1970, at step 0)
    stored = {a.path for a in client.list_logged_model_artifacts(logged.model_id)}
    assert {"MLmodel", "requirements.txt", "pyfunc_entry.py", "artifacts"} <= stored
    assert not any(name.endswith(".pkl") for name in stored)  # models from code: nothing to unpickle

    downloads = tmp_path / "tmp"
    downloads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(downloads))
    monkeypatch.chdir(downloads)  # nothing relative to the export's folder
    fetched = autoq.load(uri, tracking_uri=searched.tracking_uri)
    assert list(downloads.iterdir()) == []  # the download is removed once loaded
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(fetched(x), autoq.load(out)(x))

    monkeypatch.setenv("MLFLOW_TRACKING_URI", searched.tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{logged.model_id}")
    [spec] = pyfunc.metadata.get_input_schema().inputs
    assert (spec.type, spec.shape) == (np.dtype("float32"), (-1, 1, 8, 8))  # any batch of 8x8 images
    requirements = Path(mlflow.pyfunc.get_model_dependencies(f"models:/{logged.model_id}")).read_text().split()
    assert {r.split("==")[0] for r in requirements} >= {"mlflow", "autoq", "torch", "safetensors", "numpy"}
    assert "transformers" not in {r.split("==")[0] for r in requirements}  # digits-cnn is no Hugging Face model
    assert np.array_equal(pyfunc.predict(x.numpy()), autoq.load(out)(x).detach().numpy())
    on_cpu = mlflow.pyfunc.load_model(f"models:/{logged.model_id}", model_config={"device": "cpu"})  # MLflow's option
    direct = on_cpu.unwrap_python_model()  # called directly: a list (float64) and a one-column frame, as its docstring says
    assert pyfunc.metadata.flavors["python_function"]["config"] == {"device": "auto"}  # else MLflow drops model_config
    assert direct.device == torch.device("cpu")
    if not torch.cuda.is_available():  # the device asked for is the one taken, not dropped with a warning
        with pytest.raises(autoq.AutoqError, match="asks for device 'cuda', and no CUDA GPU is visible here"):
            mlflow.pyfunc.load_model(f"models:/{logged.model_id}", model_config={"device": "cuda"})
    expected = autoq.load(out)(x).detach().numpy()
    assert np.allclose(direct.predict(None, x.double().tolist()), expected, atol=1e-6)
    assert np.allclose(direct.predict(None, pd.DataFrame({"": list(x.numpy())})), expected, atol=1e-6)


def test_python_api_logs_to_the_run_it_exports_and_registers_versions(searched, tmp_path, monkeypatch):
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "private-notes.txt").write_text("not the export's")  # a folder that holds other files too
    client = MlflowClient(searched.tracking_uri)
    best = searched.best
    before = {run_id: _histories(client, run_id) for run_id in (searched.parent_run_id, best.run_id)}
    out = autoq.export(None, searched.parent_run_id, tmp_path / "best", tracking_uri=searched.tracking_uri, log_to_run=True,
                       registered_model_name="digits-w4")
    assert client.get_run(searched.parent_run_id).data.tags[EXPORTED_TAG] == ARTIFACT_PATH
    [first] = _logged_models(client, searched.parent_run_id)
    # the model of a search run carries its point's own metrics and params (the trial's), beside the search's: it held
    # only best_quality and the like, and a filter on metrics.quality in the Models tab passed it over
    search, trial = client.get_run(searched.parent_run_id).data, client.get_run(best.run_id).data
    assert {m.key: m.value for m in first.metrics} == {**trial.metrics, **search.metrics}
    assert first.params == {**trial.params, **search.params} and first.params["trial"] == str(best.trial)
    found = client.search_logged_models(experiment_ids=[first.experiment_id], filter_string=f"metrics.quality >= {best.quality - 1e-9}")
    assert first.model_id in {m.model_id for m in found}
    assert {run_id: _histories(client, run_id) for run_id in before} == before  # neither run's own history gained a point
    exported = {a.path for a in client.list_logged_model_artifacts(first.model_id, f"artifacts/{ARTIFACT_PATH}")}
    assert exported == {f"artifacts/{ARTIFACT_PATH}/{CONFIG_NAME}", f"artifacts/{ARTIFACT_PATH}/{WEIGHTS_NAME}"}  # the notes stay
    version = client.get_model_version("digits-w4", "1")
    assert (version.source, version.run_id) == (f"models:/{first.model_id}", searched.parent_run_id)
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    expected = autoq.load(out)(x)
    for uri in (f"runs:/{searched.parent_run_id}/{ARTIFACT_PATH}", f"models:/{first.model_id}", "models:/digits-w4/1"):
        assert torch.equal(autoq.load(uri, tracking_uri=searched.tracking_uri)(x), expected), uri

    trial = searched.points[1]  # another point, and the same run exported again: the run's address is its newest
    autoq.export(None, trial.run_id, tmp_path / "other", tracking_uri=searched.tracking_uri, log_to_run=True)
    autoq.export(None, searched.parent_run_id, tmp_path / "again", tracking_uri=searched.tracking_uri, log_to_run=True,
                 registered_model_name="digits-w4")
    assert len(_logged_models(client, searched.parent_run_id)) == 2
    assert sorted(int(v.version) for v in client.search_model_versions("name = 'digits-w4'")) == [1, 2]
    # each logged model lists its registered version, from which the MLflow UI links it: create_model_version on a
    # database store did not add the tag that mlflow.register_model adds, and the Models tab showed none registered
    listed = {m.model_id: json.loads(m.tags.get("mlflow.modelVersions", "[]")) for m in _logged_models(client, searched.parent_run_id)}
    assert listed.pop(first.model_id) == [{"name": "digits-w4", "version": 1}]
    assert list(listed.values()) == [[{"name": "digits-w4", "version": 2}]]
    newest = autoq.load(f"runs:/{searched.parent_run_id}/{ARTIFACT_PATH}", tracking_uri=searched.tracking_uri)
    assert torch.equal(newest(x), autoq.load(tmp_path / "again")(x))

    with pytest.raises(autoq.AutoqError, match=rf"log_to_run is for a point given as an MLflow run id \(a str\); this point is a Point: "
                                               rf"pass its run id, autoq.export\(model, point.run_id \('{searched.best.run_id}'\), out_dir, tracking_uri="):
        autoq.export("digits-cnn", searched.best, tmp_path / "x", log_to_run=True)
    with pytest.raises(autoq.AutoqError, match=r"this point is an Assignment$"):  # no run to name
        autoq.export("digits-cnn", searched.best.assignment, tmp_path / "x", log_to_run=True)
    with pytest.raises(autoq.AutoqError, match="registered_model_name registers the MLflow model that log_to_run=True logs"):
        autoq.export(None, trial.run_id, tmp_path / "y", tracking_uri=searched.tracking_uri, registered_model_name="digits-w4")
    with pytest.raises(autoq.AutoqError, match=r"'team/digits' cannot name a registered model \(.*'/'.*\); pass a name such as"):
        autoq.export(None, trial.run_id, tmp_path / "z", tracking_uri=searched.tracking_uri, log_to_run=True, registered_model_name="team/digits")
    with pytest.raises(autoq.AutoqError, match=r"^registered_model_name must be a str \(the Model Registry's name, e.g. 'digits-cnn-w4'\), got int 5$"):
        autoq.export(None, trial.run_id, tmp_path / "w", tracking_uri=searched.tracking_uri, log_to_run=True, registered_model_name=5)
    assert not any((tmp_path / d).exists() for d in "yzw")  # refused before quantizing


def test_a_version_the_tracking_server_already_listed_is_not_listed_twice(mlflow_uri):
    """A tracking server's handler adds the registered version to the logged model's ``mlflow.modelVersions`` tag
    itself, with an int version: comparing it with the version's str added it a second time, and the MLflow UI showed
    the model registered twice."""
    from autoq.export.mlflow_store import _link_version

    client = MlflowClient(mlflow_uri)
    model_id = client.create_logged_model(client.create_experiment("linked")).model_id
    server = [{"name": "digits-w4", "version": 1}]  # as the server's handler writes it
    client.set_logged_model_tags(model_id, {"mlflow.modelVersions": json.dumps(server)})
    _link_version(client, model_id, "digits-w4", "1")
    assert json.loads(client.get_logged_model(model_id).tags["mlflow.modelVersions"]) == server
    _link_version(client, model_id, "digits-w4", "2")  # a version not listed yet is added
    assert json.loads(client.get_logged_model(model_id).tags["mlflow.modelVersions"]) == [*server, {"name": "digits-w4", "version": 2}]


def test_cli_registers_a_version_and_refuses_a_bad_name_first(searched, tmp_path, capsys):
    trial = searched.points[1]
    base = ["export", "--run-id", trial.run_id, "--tracking-uri", searched.tracking_uri, "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "a"), "--registered-model-name", "w4"]) == 2
    assert "--registered-model-name registers the model that --log-to-run logs" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "b"), "--log-to-run", "--registered-model-name", "a:b"]) == 2
    assert "'a:b' cannot name a registered model" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert main([*base, "--out", str(tmp_path / "c"), "--log-to-run", "--registered-model-name", "cli-w4"]) == 0
    assert "Registered as models:/cli-w4/1 in the Model Registry." in capsys.readouterr().out
    [version] = MlflowClient(searched.tracking_uri).search_model_versions("name = 'cli-w4'")
    assert version.run_id == trial.run_id


def test_an_export_logged_as_plain_run_artifacts_still_loads(searched, tmp_path):
    """What autoq logged before the MLflow model: the two files under the run's quantized_model/ artifacts."""
    trial = searched.points[2]
    out = autoq.export(None, trial.run_id, tmp_path / "plain", tracking_uri=searched.tracking_uri)
    client = MlflowClient(searched.tracking_uri)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        client.log_artifact(trial.run_id, str(out / name), ARTIFACT_PATH)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(autoq.load(f"runs:/{trial.run_id}/{ARTIFACT_PATH}", tracking_uri=searched.tracking_uri)(x), autoq.load(out)(x))


@pytest.mark.slow
def test_mlflow_models_serve_answers_with_the_exported_model(searched, tmp_path):
    """The README's ``mlflow models serve -m models:/NAME/1 --env-manager local``, a real scoring server."""
    trial = searched.points[3]
    out = autoq.export(None, trial.run_id, tmp_path / "served", tracking_uri=searched.tracking_uri, log_to_run=True,
                       registered_model_name="served-w4")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MLFLOW_TRACKING_URI": searched.tracking_uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # MLflow starts uvicorn by name
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/served-w4/1", "--env-manager", "local",
                             "--host", "127.0.0.1", "-p", str(port)], env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(3))
        answer = requests.post(f"http://127.0.0.1:{port}/invocations", json={"inputs": x.tolist()}, timeout=60)
        assert answer.ok, answer.text
        assert np.allclose(np.array(answer.json()["predictions"]), autoq.load(out)(x).detach().numpy(), atol=1e-6)
        wrong = requests.post(f"http://127.0.0.1:{port}/invocations", json={"inputs": [[1.0, 2.0]]}, timeout=60)
        assert wrong.status_code == 400 and "does not match expected shape (-1, 1, 8, 8)" in wrong.json()["message"]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def test_bad_locations_are_clear_errors(searched, tmp_path):
    trial = searched.points[0]  # never exported
    with pytest.raises(autoq.AutoqError, match=rf"cannot download runs:/{trial.run_id}/{ARTIFACT_PATH} from .*autoq export --log-to-run"):
        autoq.load(f"runs:/{trial.run_id}/{ARTIFACT_PATH}", tracking_uri=searched.tracking_uri)
    missing = tmp_path / "none.db"
    with pytest.raises(autoq.AutoqError, match=r"cannot download models:/no-such-model/1 from .*models:/<registered name>/<version>"):
        autoq.load("models:/no-such-model/1", tracking_uri=searched.tracking_uri)
    with pytest.raises(autoq.AutoqError, match="no MLflow store at"):
        autoq.load(f"runs:/{trial.run_id}/{ARTIFACT_PATH}", tracking_uri=f"sqlite:///{missing}")
    assert not missing.exists()
    with pytest.raises(autoq.AutoqError, match="tracking_uri is for an MLflow artifact URI .* is a folder"):
        autoq.load(tmp_path, tracking_uri=searched.tracking_uri)
    with pytest.raises(autoq.AutoqError, match="'nope' is a path that does not exist"):  # it said 'is a folder'
        autoq.load("nope", tracking_uri=searched.tracking_uri)


def test_using_a_store_gives_back_the_callers_environment_variable(tmp_path, monkeypatch):
    """MLflow's helper unset $MLFLOW_TRACKING_URI where it was the only setting: after autoq.load, the caller's next
    run went to ./mlflow.db, and the printed mlflow.pyfunc.load_model('models:/...') missed the store."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    from autoq.export.mlflow_store import using_store

    mine, other = f"sqlite:///{tmp_path / 'mine.db'}", f"sqlite:///{tmp_path / 'other.db'}"
    monkeypatch.setattr(utils, "_tracking_uri", None)  # only the environment names the store, as in a shell
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mine)
    with using_store(other):
        assert mlflow.get_tracking_uri() == other
    assert os.environ.get("MLFLOW_TRACKING_URI") == mine and mlflow.get_tracking_uri() == mine


def test_log_to_run_of_a_model_no_export_can_rebuild_says_pyfunc_cannot_load_it(tmp_path, mlflow_uri):
    """mlflow.pyfunc.load_model rebuilds the model from the export alone: a module of the caller's was logged (and
    could be registered) without a word, and failed in every load ('this export does not say how to rebuild its
    model'). autoq.load with model= loads it from the run."""

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    result = autoq.search(model, [torch.randn(4, 16) for _ in range(4)], n_trials=2, seed_from="none", tracking_uri=mlflow_uri,
                          storage=None, progress=False)
    with pytest.warns(UserWarning, match=r"cannot be loaded by mlflow.pyfunc.load_model \(nor served\), which rebuilds the model from "
                                         r"the export alone \(it is a Sequential, neither a built-in model nor a Hugging Face one"):
        out = autoq.export(model, result.best.run_id, tmp_path / "q", tracking_uri=mlflow_uri, log_to_run=True, progress=False)
    x = torch.randn(2, 16)
    fresh = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    loaded = autoq.load(f"runs:/{result.best.run_id}/quantized_model", model=fresh, tracking_uri=mlflow_uri)
    assert torch.equal(loaded(x), autoq.load(out, model=nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)))(x))


def test_a_hugging_face_config_with_a_class_transformers_lacks_is_said_not_rebuildable():
    """A model of a Hugging Face folder's own code has a config, but pyfunc cannot rebuild its class from transformers."""
    from autoq.export.config import unrebuildable

    assert unrebuildable({"hf_config": {"model_type": "bert"}, "class": "MyBert"}) == "its class 'MyBert' is not one of transformers' models"
    assert unrebuildable({"hf_config": {"model_type": "bert"}, "class": "BertModel"}) is None
    assert unrebuildable({"builtin": "digits-cnn", "class": "DigitsCNN"}) is None


def test_a_store_or_artifact_folder_that_cannot_be_written_is_refused_before_the_export(searched, tmp_path, capsys, monkeypatch):
    """``--log-to-run`` on a read-only store quantized and wrote the export, then failed with a traceback of 199 lines
    (MLflow's SQLAlchemy error) that did not say the export was written. As root, permissions stop no write: the
    check's own ``os.access`` answers as for a store another user owns."""
    from autoq.tracking.mlflow_logger import sqlite_path

    trial = searched.points[2]
    client = MlflowClient(searched.tracking_uri)
    store = sqlite_path(searched.tracking_uri)
    artifacts = Path(client.get_experiment(client.get_run(trial.run_id).info.experiment_id).artifact_location.removeprefix("file://"))
    access = os.access
    base = ["export", "--run-id", trial.run_id, "--tracking-uri", searched.tracking_uri, "--log-to-run", "--no-progress"]
    for locked, said in ((store, rf"^autoq: error: MLflow tracking store .*: '{store}' or its folder is not writable; "),
                         (artifacts, rf"^autoq: error: the MLflow artifact folder {artifacts} of run '{trial.run_id}' is not writable; ")):
        monkeypatch.setattr(os, "access", lambda path, mode, locked=locked: access(path, mode) and not (
            mode & os.W_OK and Path(path).absolute().is_relative_to(locked)))
        out = tmp_path / locked.name
        assert main([*base, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert re.match(said + "--log-to-run logs the export there: pass a store you can write to, or leave out --log-to-run\n$", err), err
        with pytest.raises(autoq.AutoqError, match=said.removeprefix("^autoq: error: ")):
            autoq.export(None, trial.run_id, out, tracking_uri=searched.tracking_uri, log_to_run=True, progress=False)
        assert not out.exists()  # refused before quantizing
    monkeypatch.setattr(os, "access", access)
    assert main([*base, "--out", str(tmp_path / "written")]) == 0  # the same export where the store can be written


def test_a_log_that_fails_after_the_export_says_where_the_export_is(searched, tmp_path, capsys, monkeypatch):
    """A store that fails as the model is logged (a disk gone read-only meanwhile): one line, naming the written export."""
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    def failing(*args, **kwargs):  # as MLflow's SQL store raises a database's error: its own, from SQLAlchemy's
        cause = sqlalchemy.exc.OperationalError("INSERT INTO logged_models", {}, Exception("attempt to write a readonly database"))
        raise MlflowException(cause) from cause

    monkeypatch.setattr(MlflowClient, "create_logged_model", failing)
    trial = searched.points[2]
    out = tmp_path / "written"
    assert main(["export", "--run-id", trial.run_id, "--tracking-uri", searched.tracking_uri, "--out", str(out), "--log-to-run", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.endswith(f"autoq: error: the export is in {out}, but logging it to MLflow run {trial.run_id} failed (OperationalError: attempt "
                        "to write a readonly database); fix that and log it again (autoq export --log-to-run)\n"), err
    assert (out / CONFIG_NAME).is_file() and (out / WEIGHTS_NAME).is_file()
    monkeypatch.setattr(MlflowClient, "create_logged_model", lambda *a, **k: (_ for _ in ()).throw(PermissionError(13, "Permission denied", "/x/models")))
    with pytest.raises(autoq.AutoqError, match=r"^the export is in .*again, but logging it to MLflow run \w+ failed \(Permission denied: /x/models\); "):
        autoq.export(None, trial.run_id, tmp_path / "again", tracking_uri=searched.tracking_uri, log_to_run=True, progress=False)


def _small_export(tmp_path: Path) -> Path:
    """A small model's export, on disk."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    point = Assignment(tuple((layer.name, LayerChoice.from_name("int8-ch-asym:rtn-mse")) for layer in find_layers(model)))
    return autoq.export(model, point, tmp_path / "q", calibration=[torch.randn(4, 16) for _ in range(2)], progress=False)


def _log_quietly(*args, **kwargs):
    """`log_export`, without the warning that pyfunc cannot rebuild a Sequential."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return log_export(*args, **kwargs)


def test_a_logged_model_is_the_runs_output_at_step_0(tmp_path: Path, mlflow_uri: str) -> None:
    """The run page lists the logged model as its output at step 0."""
    client = MlflowClient(mlflow_uri)
    run_id = client.create_run(client.create_experiment("step")).info.run_id
    logged = _log_quietly(mlflow_uri, run_id, _small_export(tmp_path))
    assert [(o.model_id, o.step) for o in client.get_run(run_id).outputs.model_outputs] == [(logged.model_id, 0)]


def test_a_search_runs_own_tags_win_over_its_points(tmp_path: Path, mlflow_uri: str) -> None:
    """A search run's model carries the run's own latency_source where its point's trial run has another."""
    client = MlflowClient(mlflow_uri)
    experiment = client.create_experiment("search")
    search, trial = (client.create_run(experiment).info.run_id for _ in range(2))
    client.set_tag(search, "latency_source", "measured:cpu")
    client.set_tag(trial, "latency_source", "estimate:roofline:h100")
    logged = _log_quietly(mlflow_uri, search, _small_export(tmp_path), point_run_id=trial)
    assert client.get_logged_model(logged.model_id).tags["latency_source"] == "measured:cpu"


def test_a_log_that_fails_after_the_model_is_created_marks_it_failed(tmp_path: Path, mlflow_uri: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A model whose artifacts could not be logged is FAILED in the Models tab, not READY."""
    client = MlflowClient(mlflow_uri)
    run_id = client.create_run(client.create_experiment("failed")).info.run_id
    out = _small_export(tmp_path)

    def failing(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/x/models")

    monkeypatch.setattr(MlflowClient, "log_model_artifacts", failing)
    with pytest.raises(autoq.AutoqError, match=r"failed \(Permission denied: /x/models\)"):
        _log_quietly(mlflow_uri, run_id, out)
    [model] = client.search_logged_models(experiment_ids=[client.get_run(run_id).info.experiment_id])
    assert model.status == LoggedModelStatus.FAILED


def test_a_deleted_run_is_refused_naming_the_export_once(tmp_path: Path, mlflow_uri: str) -> None:
    """An error that already says where the export is is not suffixed with it a second time."""
    client = MlflowClient(mlflow_uri)
    run_id = client.create_run(client.create_experiment("deleted")).info.run_id
    out = _small_export(tmp_path)
    client.delete_run(run_id)
    with pytest.raises(autoq.AutoqError, match=rf"is deleted and takes no more logs; the export is in {re.escape(str(out))}\. .*to log it there$") as info:
        _log_quietly(mlflow_uri, run_id, out)
    assert str(info.value).count(str(out)) == 1


@pytest.mark.parametrize("name", ["", "   "])
def test_an_empty_registered_name_is_refused_as_empty(name: str) -> None:
    """An empty or blank registered model name is refused, saying it is empty."""
    with pytest.raises(autoq.AutoqError, match=rf"^{name!r} cannot name a registered model \(it is empty\); pass a name such as"):
        check_registered_name(name)
