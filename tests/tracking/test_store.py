"""Opening an MLflow store: a new SQLite store is built whole, a broken one is one clear error."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import autoq
from autoq.errors import AutoqError
from autoq.tracking import tracking_client


def test_a_broken_sqlite_store_is_one_line_that_names_the_file(tmp_path):
    """A store whose creation was cut short made every later command end in a 100-line SQLAlchemy traceback."""
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"not a database " * 20)
    with pytest.raises(AutoqError, match=f"the MLflow database {db} cannot be opened .*move it aside to start a new one"):
        tracking_client(f"sqlite:///{db}")


def test_a_ctrl_c_while_a_new_store_is_built_waits_until_it_is_whole(tmp_path, monkeypatch):
    """Building a new SQLite store runs MLflow's migrations for seconds: a Ctrl-C among them left it half built."""
    from mlflow.tracking import MlflowClient

    import autoq.tracking.disk_client  # noqa: F401  before the patch: its DiskClient, first defined under it, inherited
    # the Ctrl-C for the rest of the process (the kill test after this one was interrupted when run alone with it)

    built = []

    class Interrupted(MlflowClient):
        def __init__(self, tracking_uri: str) -> None:
            signal.raise_signal(signal.SIGINT)  # as if pressed during the migrations
            super().__init__(tracking_uri=tracking_uri)
            built.append(tracking_uri)

    monkeypatch.setattr("mlflow.tracking.MlflowClient", Interrupted)
    with pytest.raises(KeyboardInterrupt):
        tracking_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert built and MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").get_experiment("0") is not None


def test_a_kill_while_a_new_store_is_built_leaves_none_and_the_next_command_builds_it(tmp_path):
    """A kill -9 among the migrations (a search killed in its first seconds) left a half-built store that every later
    search and resume refused ('table datasets already exists') until the user moved it aside."""
    import subprocess
    import sys
    import time

    db = tmp_path / "mlflow.db"
    builder = subprocess.Popen([sys.executable, "-c", f"from autoq.tracking import tracking_client; tracking_client('sqlite:///{db}')"])
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".mlflow.db.building-*")) and builder.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert builder.poll() is None, "the store was built before it could be killed"
        time.sleep(0.3)  # among the migrations
    finally:
        builder.kill()
        builder.wait()
    assert not db.exists() and list(tmp_path.glob(".mlflow.db.building-*"))  # nothing half built where the URI points
    client = tracking_client(f"sqlite:///{db}")
    assert client.get_experiment("0") is not None and client.search_runs(["0"]) == []
    assert not list(tmp_path.glob(".mlflow.db.building-*"))  # the killed build's leftovers are gone


def test_a_new_store_in_a_folder_with_a_question_mark_is_refused_before_anything_is_built(tmp_path):
    """The build beside it read '?' as a query: a raw 'No such file' naming a hidden file, and a stray database 'q'."""
    folder = tmp_path / "q?x"
    folder.mkdir()
    with pytest.raises(AutoqError, match=r"has '%' or '\?' in its path"):
        tracking_client(f"sqlite:///{tmp_path}/q%3Fx/mlflow.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q?x"] and list(folder.iterdir()) == []


def test_a_store_deleted_and_made_again_in_one_process_is_built_anew(tmp_path):
    """MLflow caches a store per URI: the second build's hidden file had the first one's name, and its cached engine
    wrote nothing ('No such file or directory' at the link)."""
    uri = f"sqlite:///{tmp_path / 'again' / 'mlflow.db'}"
    tracking_client(uri).create_experiment("first")
    shutil.rmtree(tmp_path / "again")
    tracking_client(uri)  # (MLflow's own cache of the store for this URI still answers from the deleted file: its affair)
    assert (tmp_path / "again" / "mlflow.db").is_file() and not list((tmp_path / "again").glob(".mlflow.db.building-*"))


def test_a_store_made_meanwhile_is_not_replaced_by_the_build(tmp_path):
    """A store another program made at the URI's file while this one was built is kept, not overwritten."""
    from autoq.tracking.new_store import build_store

    db = tmp_path / "mlflow.db"
    db.write_bytes(b"another program's store")
    build_store(db)  # the race is between two programs: here the other one's store is there before the link
    assert db.read_bytes() == b"another program's store" and not list(tmp_path.glob(".mlflow.db.building-*"))


def test_a_filesystem_without_hard_links_gets_the_store_by_a_rename(tmp_path, monkeypatch):
    """Where os.link is refused (EPERM), the built store is renamed into place: the URI's file is a whole store."""
    import errno
    import os

    from autoq.tracking.new_store import build_store

    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    db = tmp_path / "mlflow.db"
    build_store(db)
    assert db.is_file() and not list(tmp_path.glob(".mlflow.db.building-*"))
    assert MlflowClient(f"sqlite:///{db}").get_experiment("0") is not None


def test_building_a_store_leaves_no_descriptor_open_on_its_building_file(tmp_path):
    """MLflow kept the build's own engine, used once, for the process: two descriptors on the (deleted) building file,
    the store's own through the hard link, for every store built; a service making one per job ran out of them."""
    import os

    for job in range(3):
        tracking_client(f"sqlite:///{tmp_path / str(job) / 'mlflow.db'}")
    held = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}")]
    assert not [target for target in held if ".mlflow.db.building-" in target]


def test_a_relative_store_is_the_one_in_the_folder_it_is_named_from(tmp_path, monkeypatch, _mlflow_template):
    """MLflow caches a store per URI string for the process: ``sqlite:///mlflow.db`` named from another folder after a
    chdir (a notebook's) kept writing to the first folder's database, while a Ray worker, told the absolute path, wrote
    to the second one and failed every trial with 'Run ... not found'."""
    from autoq.export.mlflow_store import using_store
    from autoq.tracking import MlflowTracker

    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
        shutil.copy(_mlflow_template, folder / "mlflow.db")  # migrated already: seconds saved
    monkeypatch.chdir(first)
    tracking_client("sqlite:///mlflow.db").search_experiments()
    monkeypatch.chdir(second)
    tracker = MlflowTracker.open("sqlite:///mlflow.db", "moved")
    assert tracker.client.get_experiment(tracker.experiment_id).name == "moved"
    assert MlflowClient(f"sqlite:///{second / 'mlflow.db'}").get_experiment_by_name("moved") is not None
    assert MlflowClient(f"sqlite:///{first / 'mlflow.db'}").get_experiment_by_name("moved") is None
    import mlflow

    with using_store("sqlite:///mlflow.db"):  # MLflow's default store, as an export's model look-ups use it
        assert mlflow.MlflowClient().get_experiment_by_name("moved") is not None


def test_a_trial_run_whose_logging_fails_partway_is_deleted(mlflow_uri, monkeypatch):
    """A Ray worker whose logging failed after the run was made left it RUNNING, and the driver logged the trial again:
    two runs for one trial."""
    from mlflow.tracking import MlflowClient

    from autoq.choice import Assignment, LayerChoice
    from autoq.tracking import MlflowTracker

    tracker = MlflowTracker.open(mlflow_uri, "autoq")
    tracker.start("s", params={}, tags={})
    assignment = Assignment((("0", LayerChoice.from_name("int4-ch-asym:rtn-mse")),))

    def locked(*args, **kwargs):
        raise RuntimeError("database is locked")

    monkeypatch.setattr(tracker.client, "log_text", locked)
    with pytest.raises(RuntimeError, match="database is locked"):
        tracker.log_trial(1, {"quality": 0.5}, {}, assignment)
    client = MlflowClient(mlflow_uri)
    runs = client.search_runs([tracker.experiment_id], f"tags.`mlflow.parentRunId` = '{tracker.parent_id}'")
    assert runs == []  # deleted runs are not listed
    monkeypatch.undo()
    tracker.log_trial(1, {"quality": 0.5}, {}, assignment)
    assert len(client.search_runs([tracker.experiment_id], f"tags.`mlflow.parentRunId` = '{tracker.parent_id}'")) == 1


def test_a_sqlite_url_is_read_as_sqlalchemy_reads_it(tmp_path, monkeypatch):
    """'sqlite+pysqlite:///pr.db' stayed relative (a resume elsewhere made an empty database), and '%20' was taken as
    written while Optuna opened the folder with a space: autoq checked another file than the one used."""
    from autoq.engine import SearchConfig
    from autoq.tracking import absolute_uri, sqlite_path

    monkeypatch.chdir(tmp_path)
    assert absolute_uri("sqlite+pysqlite:///pr.db?timeout=5") == f"sqlite+pysqlite:///{tmp_path.resolve() / 'pr.db'}?timeout=5"
    assert sqlite_path("sqlite:////tmp/a%20b/x.db") == Path("/tmp/a b/x.db") and sqlite_path("postgresql://u:p@h/db") is None
    for url, folder in (("sqlite:///a%20b/m.db", "a b"), ("sqlite:///ü+#/m.db", "ü+#")):
        made = absolute_uri(url)  # written as is (MLflow makes the folder of the text; escaped, it made a stray '%C3%BC')
        assert sqlite_path(made) == tmp_path.resolve() / folder / "m.db" and absolute_uri(made) == made, made
        assert made == f"sqlite:///{tmp_path.resolve() / folder / 'm.db'}"
    for url in ("sqlite:///d%3Fx/m.db", "sqlite:///p%2520q/m.db"):  # 'd?x', 'p%20q': no URL names them to both readers
        with pytest.raises(AutoqError, match="has '%' or '\\?' in its path: SQLAlchemy .* put the store in a folder without them"):
            absolute_uri(url)
    (tmp_path / "sp ace").mkdir()
    storage = SearchConfig(storage=f"sqlite:///{tmp_path}/sp%20ace/o.db", tracking_uri=None).resolved_storage()
    assert storage == f"sqlite:///{tmp_path.resolve() / 'sp ace' / 'o.db'}"
    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=2, seed_from="none", storage=f"sqlite:///{tmp_path}/sp%20ace/o.db",
                          tracking_uri=None, progress=False)
    assert (tmp_path / "sp ace" / "o.db").is_file() and not (tmp_path / "sp%20ace").exists() and len(result.study().trials) == 2


def test_an_in_memory_sqlite_url_names_no_file(tmp_path, monkeypatch):
    """``storage="sqlite:///:memory:"`` made a file named ':memory:' in the working folder (its path made absolute)."""
    from autoq.tracking import absolute_uri, sqlite_path

    monkeypatch.chdir(tmp_path)
    assert sqlite_path("sqlite:///:memory:") is None and absolute_uri("sqlite:///:memory:") == "sqlite:///:memory:"
    assert sqlite_path("sqlite:///runs/m.db?timeout=30").name == "m.db"
    assert absolute_uri("sqlite:///runs/m.db?timeout=30") == f"sqlite:///{tmp_path.resolve() / 'runs' / 'm.db'}?timeout=30"  # kept
    from autoq.engine import SearchConfig

    # refused: a study in memory is storage=None (SQLite's keeps nothing a resume or result.study() could reopen, and
    # 'sqlite:///' said "no search named ..." of the search's own new study)
    for url in ("sqlite:///:memory:", "sqlite:///", "sqlite://"):
        with pytest.raises(AutoqError, match=f"Optuna storage '{url}' names no database file .*or none for a search held in memory"):
            SearchConfig(storage=url, tracking_uri=None)
    assert not (tmp_path / ":memory:").exists()


def _open_store(uri: str) -> str:
    from autoq.tracking import tracking_client

    try:
        tracking_client(uri).search_experiments()
    except Exception as exc:  # noqa: BLE001 - the test reports what each process met
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def test_searches_starting_together_on_a_new_store_all_open_it(tmp_path):
    """Two searches in a fresh folder both migrated the new SQLite store: one died on the other's tables ('table
    experiments already exists', or alembic's traceback) and was told to move the store, with the other's runs, aside."""
    import multiprocessing

    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        assert pool.map(_open_store, [uri] * 3) == ["ok"] * 3


def test_a_storage_password_is_not_shown_in_mlflow():
    """The Optuna storage URL was logged verbatim as a param: readers of the experiment read the database password."""
    from autoq.tracking import without_password

    assert without_password("postgresql://me:s3cret@db.example:5432/studies") == "postgresql://me:***@db.example:5432/studies"
    assert without_password("sqlite:////tmp/optuna.db") == "sqlite:////tmp/optuna.db"
    assert without_password("postgresql://me@db/studies") == "postgresql://me@db/studies"
    assert without_password("memory") == "memory"


def test_a_resume_finds_its_run_by_the_storage_shown_without_its_password(mlflow_uri):
    from mlflow.tracking import MlflowClient

    from autoq.tracking.runs import find_search

    client = MlflowClient(mlflow_uri)
    experiment = client.create_experiment("x")
    for storage in ("postgresql://me:***@db/s", "sqlite:////other.db"):
        run = client.create_run(experiment, tags={"autoq.kind": "search", "autoq.study": "s"}).info.run_id
        client.log_param(run, "optuna_storage", storage)
    found = find_search(client, experiment, "s", "postgresql://me:s3cret@db/s")
    assert found is not None and found.data.params["optuna_storage"] == "postgresql://me:***@db/s"


def test_a_resume_continues_a_run_logged_with_the_password_shown_or_hidden(mlflow_uri):
    """Runs an earlier autoq logged hold the storage with its password: the resume looked for the hidden form only and
    would have opened a second parent run."""
    from autoq.tracking import MlflowTracker

    storage = "postgresql://me:s3cret@db/s"
    for name, logged in (("old", storage), ("new", "postgresql://me:***@db/s")):
        tracker = MlflowTracker.open(mlflow_uri, "exp")
        tracker.start(name, {"optuna_storage": logged}, {"autoq.kind": "search", "autoq.study": name})
        again = MlflowTracker.open(mlflow_uri, "exp")
        assert again.continue_search(name, storage) and again.parent_id == tracker.parent_id


def test_a_resume_does_not_take_an_in_memory_search_of_its_name_for_its_own(mlflow_uri):
    """An in-memory run matched any storage: a resume reopened it and deleted its trial runs."""
    from mlflow.tracking import MlflowClient

    from autoq.tracking.runs import find_search

    client = MlflowClient(mlflow_uri)
    experiment = client.create_experiment("mem")
    memory = client.create_run(experiment, tags={"autoq.kind": "search", "autoq.study": "s"}).info.run_id
    client.log_param(memory, "optuna_storage", "memory")
    assert find_search(client, experiment, "s", "sqlite:////data/optuna.db") is None
    assert find_search(client, experiment, "s", "memory").info.run_id == memory
    early = client.create_run(experiment, tags={"autoq.kind": "search", "autoq.study": "t"}).info.run_id  # logged no storage
    assert find_search(client, experiment, "t", "sqlite:////data/optuna.db").info.run_id == early


@pytest.mark.parametrize(("uri", "shown", "note"), [
    ("http://alice:pw@127.0.0.1:5000", "http://127.0.0.1:5000", "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"),
    ("https://alice@host/mlflow?x=1", "https://host/mlflow?x=1", "set MLFLOW_TRACKING_USERNAME"),
    ("http://u:p@[::1]:5000", "http://[::1]:5000", "left out"),
    ("postgresql://u:pw@db/mlflow", "postgresql://u:***@db/mlflow", "put yours in place of ***"),  # no variable for a database's
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000", ""),
    ("sqlite:////tmp/m.db", "sqlite:////tmp/m.db", ""),
])
def test_a_tracking_uri_is_shown_without_its_credentials(uri, shown, note):
    """A password in the tracking URI went into every frontier run's description, which every reader of the experiment sees;
    a server URL with '***' in place of it overrides MLflow's credential variables and fails."""
    from autoq.tracking.mlflow_logger import credentials_note, shown_uri

    assert shown_uri(uri) == shown
    assert (note in credentials_note(uri)) if note else credentials_note(uri) == ""


def test_an_experiment_another_search_creates_meanwhile_is_joined(mlflow_uri, monkeypatch):
    """Two searches of an outer study with n_jobs=2 on a new store: both looked the experiment up, found none, and the
    second to create it failed ("already exists") and stopped its outer study."""
    from mlflow.tracking import MlflowClient

    from autoq.tracking import MlflowTracker

    looked_up = MlflowClient.get_experiment_by_name
    raced = []

    def created_meanwhile(self, name):  # the other search creates it just after this one looked and found none
        if not raced:
            raced.append(MlflowClient(mlflow_uri).create_experiment(name))
            return None
        return looked_up(self, name)

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", created_meanwhile)
    assert MlflowTracker.open(mlflow_uri, "shared").experiment_id == raced[0]


def test_an_artifact_logged_under_a_path_goes_to_that_folder(mlflow_uri, tmp_path):
    """The client's log_artifact keeps its artifact_path: the file is listed in that folder of the run."""
    from helpers import artifacts_beside

    client = tracking_client(mlflow_uri)
    run_id = client.create_run(client.create_experiment("x", artifact_location=artifacts_beside(mlflow_uri))).info.run_id
    (tmp_path / "table.csv").write_text("a,b\n")
    client.log_artifact(run_id, str(tmp_path / "table.csv"), "tables")
    assert [a.path for a in client.list_artifacts(run_id, "tables")] == ["tables/table.csv"]
