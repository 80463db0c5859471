"""Several processes on one study name: the name is taken as a search starts, before its set-up's work; a second
search of it is refused at once and leaves the first's study alone; a study left empty by a killed set-up is taken
over; a default name taken meanwhile moves on to the next suffix; two resumes are one at a time."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import optuna
import pytest

import autoq
import autoq.engine.seeding as seeding
from autoq.builtin import load_workload
from autoq.engine.resume import check_resumable
from autoq.engine.sessions import SESSION_ATTR, claim, storage_lock
from autoq.engine.study_names import SETTINGS_ATTR, new_study
from autoq.errors import AutoqError

# a search of digits-cnn whose set-up (the sensitivity table) takes a minute: it holds its study name meanwhile
SLOW_SETUP = """
import sys, time
import autoq.engine.seeding as seeding
def slow(*args, **kwargs):
    print("setting up", flush=True)
    time.sleep(120)
seeding.seed_table = slow
import autoq
autoq.search("digits-cnn", budget="4.5bits", n_trials=20, seed_from="fisher", tracking_uri=None, storage=sys.argv[1], study_name=sys.argv[2],
             progress=False)
"""
DIRECTIONS = ["maximize", "minimize"]


@pytest.fixture
def digits():
    return load_workload("digits-cnn")  # trained and cached before a subprocess needs it


def _start(code: str, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return proc


def _wait_for(proc: subprocess.Popen, line: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = proc.stdout.readline()
        if got.strip() == line:
            return
        if not got and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"no {line!r} from the subprocess: {proc.stderr.read()}")


def test_a_second_search_of_a_name_being_set_up_is_refused_at_once_and_the_first_keeps_its_study(digits, tmp_path, monkeypatch):
    """The study was made only with the strategy, after the set-up's minutes: a second search of the name went through
    its own set-up, failed on the first one's study, and then deleted it; the first died with "no search named"."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = _start(SLOW_SETUP, storage, "same")
    try:
        _wait_for(first, "setting up")
        set_up, original = [], seeding.seed_table
        monkeypatch.setattr(seeding, "seed_table", lambda *args, **kwargs: set_up.append(args) or original(*args, **kwargs))  # watched
        with pytest.raises(AutoqError, match=f"a search named 'same' is starting in .* \\(process {first.pid} on this machine\\)"):
            autoq.search("digits-cnn", budget="4.5bits", n_trials=2, tracking_uri=None, storage=storage, study_name="same", progress=False)
        assert set_up == []  # refused before its own set-up, not after it
        with pytest.raises(AutoqError, match=f"search 'same' is still setting up \\(process {first.pid} on this machine\\)"):
            autoq.search("digits-cnn", budget="4.5bits", n_trials=2, tracking_uri=None, storage=storage, study_name="same", resume=True,
                         progress=False)
        study = optuna.load_study(study_name="same", storage=storage)  # the first one's study is still there
        assert study.user_attrs[SESSION_ATTR]["pid"] == first.pid
        # its process killed while it set up, the empty study is taken over by the next search of that name
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        with pytest.raises(AutoqError, match="has nothing to resume: its process was killed while it set up.*same command"):
            autoq.search("digits-cnn", budget="4.5bits", n_trials=2, tracking_uri=None, storage=storage, study_name="same", resume=True,
                         progress=False)
        result = autoq.search("digits-cnn", budget="4.5bits", n_trials=2, tracking_uri=None, storage=storage, study_name="same", progress=False)
        assert result.study_name == "same" and len(result.points) == 2
    finally:
        first.kill()
        first.wait(timeout=30)


def test_a_default_name_another_process_took_meanwhile_moves_on_to_the_next_suffix(digits, tmp_path):
    """Two searches started in the same second picked the same free default name long before either made its study:
    one was refused for a name it never gave, the other died on a study deleted under it."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = _start(SLOW_SETUP, storage, "autoq-digits-cnn-x")
    try:
        _wait_for(first, "setting up")
        with new_study(storage, "autoq-digits-cnn-x", DIRECTIONS, numbered=True) as name:
            assert name == "autoq-digits-cnn-x-2"
        with pytest.raises(AutoqError, match="is starting"), new_study(storage, "autoq-digits-cnn-x", DIRECTIONS, numbered=False):
            pass
    finally:
        first.kill()
        first.wait(timeout=30)
    assert sorted(optuna.get_all_study_names(storage)) == ["autoq-digits-cnn-x", "autoq-digits-cnn-x-2"]  # the refused one made none


def test_a_study_autoq_did_not_make_is_neither_taken_over_nor_deleted(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="theirs", storage=storage, directions=DIRECTIONS)
    with pytest.raises(AutoqError, match="a study named 'theirs' already exists") as refused, new_study(storage, "theirs", DIRECTIONS, numbered=False):
        pass
    assert optuna.get_all_study_names(storage) == ["theirs"]
    # it advised resuming it, which is then refused: the study holds no autoq settings
    assert "autoq search did not start it" in str(refused.value) and "--resume" not in str(refused.value)
    setting_up = optuna.create_study(study_name="elsewhere", storage=storage, directions=DIRECTIONS)
    setting_up.set_user_attr(SESSION_ATTR, {"host": "gpu-node-7", "pid": 4242})  # an autoq search setting up on another machine
    with pytest.raises(AutoqError, match="already exists") as refused, new_study(storage, "elsewhere", DIRECTIONS, numbered=False):
        pass
    assert "did not start it" not in str(refused.value) and "delete_study" not in str(refused.value)


# a resume of study sys.argv[2] (no layers: nothing stored to check), once this prints "ready"
RESUME = """
import sys
from types import SimpleNamespace
from autoq.engine.resume import check_resumable
print("ready", flush=True)
try:
    check_resumable(sys.argv[1], sys.argv[2], {}, SimpleNamespace(layers=[], options=[]))
    print("resumed", flush=True)
except Exception as exc:
    print(f"refused: {exc}", flush=True)
"""


def test_a_resume_reads_who_runs_the_search_and_claims_it_in_one_step(tmp_path):
    """Two resumes started together after a crash both read the dead process's session, then both wrote their own and
    both ran the search (588 trials for 400). Here a resume starts while this process, as another resume would, holds
    the storage between reading the session and writing its own: it waits, then sees this live process and refuses."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="crashed", storage=storage, directions=DIRECTIONS)
    study.set_user_attr(SETTINGS_ATTR, {})
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    study.set_user_attr(SESSION_ATTR, {"host": os.uname().nodename, "pid": int(dead.stdout)})
    with storage_lock(storage):
        other = _start(RESUME, storage, "crashed")
        _wait_for(other, "ready")
        time.sleep(1.5)  # the other resume reaches its read of the session meanwhile
        assert other.poll() is None  # it waits for the storage
        claim(study)
    out, err = other.communicate(timeout=60)
    assert f"refused: search 'crashed' is still running (process {os.getpid()} on this machine)" in out, out + err
    # alone, a resume of the crashed search goes on and claims it
    study.set_user_attr(SESSION_ATTR, {"host": os.uname().nodename, "pid": int(dead.stdout)})
    assert check_resumable(storage, "crashed", {}, SimpleNamespace(layers=[], options=[])) == 0
    assert optuna.load_study(study_name="crashed", storage=storage).user_attrs[SESSION_ATTR]["pid"] == os.getpid()


OPEN_STORE = """
import sys
from autoq.tracking import tracking_client
print("ready", flush=True)
tracking_client(sys.argv[1])
print("opened", flush=True)
"""


def test_opening_an_mlflow_store_waits_while_another_process_builds_it(tmp_path, mlflow_uri):
    """The folder was locked only when the database file was missing, asked before locking: the file appears as the
    first process begins its migrations, and a second one opened the half-built store ('table ... already exists',
    alembic's 'expected to match one row'). Here this process holds the lock as a builder would, the file present."""
    from autoq.files import folder_lock
    from autoq.tracking import sqlite_path

    db = sqlite_path(mlflow_uri)
    assert db.is_file()
    with folder_lock(db.parent):
        other = _start(OPEN_STORE, mlflow_uri)
        _wait_for(other, "ready")
        time.sleep(3)
        assert other.poll() is None  # waits for the builder
    out, err = other.communicate(timeout=120)
    assert "opened" in out, err


def test_the_wall_time_of_a_search_whose_study_was_deleted_under_it_is_this_sessions(tmp_path):
    """Its store call raised inside the search's clean-up, hiding the search's own error and leaving the MLflow run
    RUNNING."""
    from autoq.engine.resume import add_wall_seconds

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="other", storage=storage)
    assert add_wall_seconds(storage, "gone", 3.5) == 3.5


def test_a_ctrl_c_while_the_study_is_made_deletes_it_and_the_same_call_runs_again(tmp_path, monkeypatch):
    """The Ctrl-C, held while the study was made and marked this process's, was raised before the clean-up could see
    the study: it stayed, alive and this process's, and the same call in a notebook was refused its name both ways
    ("already exists ... resume it", then "stored no settings yet")."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    create = optuna.create_study

    def pressed(*args, **kwargs):
        study = create(*args, **kwargs)
        signal.raise_signal(signal.SIGINT)  # held until the study is marked
        return study

    monkeypatch.setattr(optuna, "create_study", pressed)
    with pytest.raises(KeyboardInterrupt), new_study(storage, "nb", DIRECTIONS, numbered=False):
        pytest.fail("the search went on past the Ctrl-C")
    assert optuna.get_all_study_names(storage) == []
    monkeypatch.setattr(optuna, "create_study", create)
    with new_study(storage, "nb", DIRECTIONS, numbered=False) as name:
        assert name == "nb"
    with pytest.raises(KeyboardInterrupt), new_study(storage, "seeding", DIRECTIONS, numbered=False):
        raise KeyboardInterrupt  # pressed while the seeds go in: a study never usable is not left behind
    assert optuna.get_all_study_names(storage) == ["nb"]


def test_a_study_killed_with_its_seeds_enqueued_but_no_settings_is_taken_over(tmp_path):
    """Killed between enqueuing its seeds and storing its settings, a study was refused both ways, each message
    pointing to the other: "already exists ... resume it", and "nothing to resume ... start it again"."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="seeded", storage=storage, directions=DIRECTIONS)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    study.set_user_attr(SESSION_ATTR, {"host": os.uname().nodename, "pid": int(dead.stdout)})
    study.enqueue_trial({"x": "int4"})
    with new_study(storage, "seeded", DIRECTIONS, numbered=False) as name:
        taken = optuna.load_study(study_name=name, storage=storage)
        assert name == "seeded" and not taken.trials and taken.user_attrs[SESSION_ATTR]["pid"] == os.getpid()
    study = optuna.load_study(study_name="seeded", storage=storage)
    study.tell(study.ask(), [1.0, 1.0])  # one evaluated trial: a search that was running, not one cut short in set-up
    study.set_user_attr(SESSION_ATTR, {"host": os.uname().nodename, "pid": int(dead.stdout)})
    with pytest.raises(AutoqError, match="already exists"), new_study(storage, "seeded", DIRECTIONS, numbered=False):
        pass


def test_a_search_a_live_process_finished_is_not_running(digits, tmp_path, mlflow_uri, capsys):
    """A notebook or pipeline that ran a search lives on: 'autoq pareto' called the search still running and a resume
    was refused ("still running (process N)")."""
    from autoq.cli import main

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    code = ("import sys, time, autoq\n"
            "autoq.search('digits-cnn', budget='4.5bits', n_trials=2, seed_from='none', tracking_uri=sys.argv[1], storage=sys.argv[2], "
            "study_name='done', progress=False)\nprint('done', flush=True)\ntime.sleep(120)\n")
    notebook = _start(code, mlflow_uri, storage)
    try:
        _wait_for(notebook, "done")
        assert main(["pareto", "done", "--tracking-uri", mlflow_uri]) == 0
        assert "still running" not in capsys.readouterr().out
        again = autoq.search("digits-cnn", budget="4.5bits", n_trials=3, seed_from="none", tracking_uri=mlflow_uri, storage=storage,
                             study_name="done", resume=True, progress=False)
        assert len(again.points) == 3
    finally:
        notebook.kill()
        notebook.wait(timeout=30)


def test_a_plug_in_strategy_that_creates_its_study_itself_is_told_how_to_load_it(digits, monkeypatch):
    from autoq.engine import strategies
    from autoq.engine.strategies import register_strategy, strategy_factory

    monkeypatch.setattr(strategies, "_STRATEGIES", strategies._STRATEGIES.copy())

    @register_strategy("makes-its-own")
    def factory(ctx):
        optuna.create_study(study_name=ctx.study_name, storage=ctx.storage, directions=DIRECTIONS)  # as before the search made it
        return strategy_factory("random")(ctx)

    with pytest.raises(AutoqError, match="creates its Optuna study itself.*load_if_exists=True"):
        autoq.search("digits-cnn", budget="4.5bits", n_trials=2, strategy="makes-its-own", tracking_uri=None, progress=False,
                     storage=f"sqlite:///{__import__('tempfile').mkdtemp()}/optuna.db")


def test_a_search_that_fails_after_storing_its_study_ends_its_session(digits, tmp_path, monkeypatch):
    """Its process lives on (a notebook): the study kept naming it as running, so a resume was refused while it lived."""
    from autoq.engine import runner

    def fail(*args, **kwargs):
        raise AutoqError("the tracking store failed")

    monkeypatch.setattr(runner, "start_tracking", fail)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    with pytest.raises(AutoqError, match="the tracking store failed"):
        autoq.search("digits-cnn", budget="4.5bits", n_trials=2, seed_from="none", tracking_uri=None, storage=storage, study_name="f",
                     progress=False)
    assert optuna.load_study(study_name="f", storage=storage).user_attrs[SESSION_ATTR]["ended"] is True


def test_another_process_given_a_dead_sessions_pid_is_not_taken_for_it(tmp_path):
    """Only host and pid were compared: a later process given the pid (a `sleep`) blocked the resume, and was named."""
    from autoq.engine.sessions import _start_time, live_owner

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="reused", storage=storage, directions=DIRECTIONS)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        session = {"host": os.uname().nodename, "pid": other.pid}
        study.set_user_attr(SESSION_ATTR, {**session, "started": "1"})  # the process that had the pid started then
        assert live_owner(optuna.load_study(study_name="reused", storage=storage)) is None
        study.set_user_attr(SESSION_ATTR, {**session, "started": _start_time(other.pid)})
        assert live_owner(optuna.load_study(study_name="reused", storage=storage)) == other.pid
    finally:
        other.kill()
        other.wait()


def test_a_ctrl_c_after_set_up_says_how_to_go_on_and_a_failed_resume_ends_its_session(digits, tmp_path, monkeypatch):
    """A Ctrl-C while the MLflow run was being made printed only 'interrupted', though the study was stored; a resume
    that failed after claiming the study (before the search took it on) left it named as running."""
    from autoq.engine import resume, runner
    from autoq.errors import SearchInterrupted

    def pressed(*args, **kwargs):
        raise KeyboardInterrupt

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    options = dict(budget="4.5bits", n_trials=2, seed_from="none", tracking_uri=None, storage=storage, study_name="c", progress=False)
    with monkeypatch.context() as patch:
        patch.setattr(runner, "start_tracking", pressed)
        with pytest.raises(SearchInterrupted, match="interrupted before this session's first trial, kept in the Optuna study; "
                                                    "continue with: autoq search --resume c --tracking-uri none --storage"):
            autoq.search("digits-cnn", **options)

    def broken(*args, **kwargs):
        raise AutoqError("reopening failed")

    monkeypatch.setattr(resume, "_reopen", broken)
    with pytest.raises(AutoqError, match="reopening failed"):
        autoq.search("digits-cnn", resume=True, **options)
    assert optuna.load_study(study_name="c", storage=storage).user_attrs[SESSION_ATTR]["ended"] is True


@pytest.mark.parametrize("micro", ["\u00b5", "\u03bc"])  # the micro sign and the Greek mu
def test_a_default_name_writes_a_microsecond_budget_as_us(micro):
    """'250µs' was named 'autoq-m-250-s-...', which reads as seconds."""
    from autoq.budget import parse_budget
    from autoq.engine.study_names import default_study_name

    assert default_study_name("m", parse_budget(f"250{micro}s")).startswith("autoq-m-250us-")
    # a budget's point is kept, other marks are one dash each; the time is to the second (two searches a minute apart)
    assert re.fullmatch(r"autoq-my-model-4\.5bits-\d{8}-\d{6}", default_study_name("my/model", parse_budget("4.5bits")))


def test_a_search_another_thread_of_this_process_runs_is_not_resumed_or_started_again(tmp_path):
    """Two threads resuming one study both ran it (509 trials of 300); a resume while another thread ran it failed that
    thread's trial under it (Optuna's UpdateFinishedTrialError); a second start was told to resume it."""
    import threading

    import torch
    from torch import nn

    def model():  # each search its own copy: a trial quantizes its model in place
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))

    data = [torch.randn(8, 16, generator=torch.Generator().manual_seed(1)) for _ in range(2)]
    started, go_on, calls = threading.Event(), threading.Event(), []

    def evaluate(m):
        calls.append(threading.get_ident())
        if calls.count(threading.get_ident()) > 1:  # a trial, after the reference pass: the study is stored and claimed
            started.set()
            assert go_on.wait(30)  # a regression: a resume in this thread waits here, and fails the trial
        return 1.0

    options = dict(budget="6bits", seed_from="none", storage=f"sqlite:///{tmp_path / 'optuna.db'}", tracking_uri=None,
                   progress=False, study_name="threads", max_retries=0)
    results = []
    runner = threading.Thread(target=lambda: results.append(autoq.search(model(), data, evaluate, n_trials=3, **options)))
    runner.start()
    try:
        assert started.wait(60)
        with pytest.raises(AutoqError, match=r"^search 'threads' is still running \(another thread of this process\); let it "
                                             r"finish, then resume$"):
            autoq.search(model(), data, evaluate, n_trials=4, resume=True, **options)
        with pytest.raises(AutoqError, match=r"a search named 'threads' is running in .* \(another thread of this process\); choose"):
            autoq.search(model(), data, evaluate, n_trials=4, **options)
    finally:
        go_on.set()
        runner.join(120)
    assert len(results) == 1 and len(results[0].points) == 3
    assert len(autoq.search(model(), data, evaluate, n_trials=4, resume=True, **options).points) == 4  # it ended: resumable
