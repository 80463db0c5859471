"""An export logged to its MLflow run (``--log-to-run``) and loaded back by its ``runs:/`` URI."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

import autoq
from autoq.cli import main
from autoq.export.mlflow_store import ARTIFACT_PATH, EXPORTED_TAG, is_artifact_uri


@pytest.fixture(scope="module")
def searched(tmp_path_factory, _mlflow_template):
    folder = tmp_path_factory.mktemp("logged-export")
    shutil.copy(_mlflow_template, folder / "mlflow.db")
    return autoq.search("digits-cnn", budget="4.5bits", n_trials=4, tracking_uri=f"sqlite:///{folder / 'mlflow.db'}", storage=None, progress=False)


@pytest.mark.parametrize(("location", "uri"), [("runs:/abc/quantized_model", True), ("models:/m/1", True), ("s3://b/k", True),
                                               ("mlflow-artifacts:/x", True), ("out/model", False), ("C:/models/out", False),
                                               (Path("runs:/abc"), False)])
def test_what_counts_as_an_artifact_uri(location, uri):
    assert is_artifact_uri(location) is uri


def test_cli_logs_the_export_to_its_run_and_load_fetches_it(searched, tmp_path, capsys, monkeypatch):
    trial = searched.points[-1]
    out = tmp_path / "local"
    assert main(["export", "--run-id", trial.run_id, "--tracking-uri", searched.tracking_uri, "--out", str(out), "--log-to-run", "--no-progress"]) == 0
    uri = f"runs:/{trial.run_id}/{ARTIFACT_PATH}"
    assert f"Logged to MLflow run {trial.run_id} as {uri}" in capsys.readouterr().out
    client = MlflowClient(searched.tracking_uri)
    assert client.get_run(trial.run_id).data.tags[EXPORTED_TAG] == ARTIFACT_PATH
    assert sorted(f.path for f in client.list_artifacts(trial.run_id, ARTIFACT_PATH)) == sorted(f"{ARTIFACT_PATH}/{p.name}" for p in out.iterdir())

    downloads = tmp_path / "tmp"
    downloads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(downloads))
    monkeypatch.chdir(downloads)  # nothing relative to the export's folder
    fetched = autoq.load(uri, tracking_uri=searched.tracking_uri)
    assert list(downloads.iterdir()) == []  # the download is removed once loaded
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(fetched(x), autoq.load(out)(x))


def test_python_api_logs_to_the_run_it_exports(searched, tmp_path):
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "private-notes.txt").write_text("not the export's")  # a folder that holds other files too
    out = autoq.export(None, searched.parent_run_id, tmp_path / "best", tracking_uri=searched.tracking_uri, log_to_run=True)
    client = MlflowClient(searched.tracking_uri)
    assert client.get_run(searched.parent_run_id).data.tags[EXPORTED_TAG] == ARTIFACT_PATH
    logged = {a.path.rpartition("/")[2] for a in client.list_artifacts(searched.parent_run_id, ARTIFACT_PATH)}
    assert logged == {"autoq_config.json", "model.safetensors"}  # the whole folder went up
    model = autoq.load(f"runs:/{searched.parent_run_id}/{ARTIFACT_PATH}", tracking_uri=searched.tracking_uri)
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(model(x), autoq.load(out)(x))
    with pytest.raises(autoq.AutoqError, match="log_to_run is for a point given as an MLflow run id"):
        autoq.export("digits-cnn", searched.best, tmp_path / "x", log_to_run=True)


def test_bad_locations_are_clear_errors(searched, tmp_path):
    trial = searched.points[0]  # never exported
    with pytest.raises(autoq.AutoqError, match=rf"cannot download runs:/{trial.run_id}/{ARTIFACT_PATH} from .*autoq export --log-to-run"):
        autoq.load(f"runs:/{trial.run_id}/{ARTIFACT_PATH}", tracking_uri=searched.tracking_uri)
    missing = tmp_path / "none.db"
    with pytest.raises(autoq.AutoqError, match="no MLflow store at"):
        autoq.load(f"runs:/{trial.run_id}/{ARTIFACT_PATH}", tracking_uri=f"sqlite:///{missing}")
    assert not missing.exists()
    with pytest.raises(autoq.AutoqError, match="tracking_uri is for an MLflow artifact URI"):
        autoq.load(tmp_path, tracking_uri=searched.tracking_uri)
