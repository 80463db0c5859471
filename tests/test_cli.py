"""The ``autoq`` command: bad input exits non-zero with one line and no traceback."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import pytest
from helpers import artifacts_beside, mlflow_refuses_folder_stores, run_main


def run_cli(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "autoq", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--budget", "abc"], "cannot parse budget 'abc'"),
        (["--budget=-1bits"], "must be positive"),
        (["--budget", "3ms"], "latency budget"),
        (["--model", "digits-cnn", "--budget", "2.01bits"], "below the cheapest assignment; the feasible range"),
        (["--model", "no/such/folder", "--budget", "0.5bits"], "below 2 bits a weight, the fewest any option of the search space 'default' "
                                                               "stores"),  # said before the model is looked for
        (["--model", "does/not/exist"], "does not exist; pass a local Hugging Face model directory (with config.json) or a built-in model: minilm, smollm2, digits-cnn"),
        (["--model", "digits-cnn", "--skip", ".*"], "no quantizable layer"),
        (["--model", "digits-cnn", "--space", "nope"], "unknown search space 'nope'"),
        (["--model", "digits-cnn", "--pin", "garbage"], "cannot parse pin"),
        # said before the model loads (minutes for an LLM): the model named here does not exist
        (["--model", "no/such/folder", "--pin", "0=int4-ch:rtn-mse"], "--pin 0=int4-ch:rtn-mse (pins={'0': 'int4-ch:rtn-mse'} in Python): cannot parse quantization format 'int4-ch'"),
        (["--model", "no/such/folder", "--pin", "0=int4-ch-asym:nosuch"], "--pin 0=int4-ch-asym:nosuch (pins={'0': 'int4-ch-asym:nosuch'} in Python): unknown PTQ method 'nosuch'"),
        (["--sampler", "annealing"], "unknown sampler 'annealing'; choose one of tpe, nsga2, random"),
        (["--n-trials", "0"], "n_trials (--n-trials) must be at least 1"),
        (["--seed", "-1"], "seed (--seed) must be an integer from 0 to 2**32 - 1"),  # a numpy traceback after loading
        (["--budget", "-1bits"], "must be positive"),  # argparse's usage block ('expected one argument')
        (["--timeout", "-5"], "timeout (--timeout) must be a positive number of seconds"),
        (["--timeout", "-1e3"], "timeout (--timeout) must be a positive number of seconds"),  # not a negative number to argparse
        (["--model", "digits-cnn", "--storage", "sqlite:///cli_test.py/x.db"], "cli_test.py' is a file, not a folder"),
        (["--model", "digits-cnn", "--storage", "postgresql://u@nohost/db"], "the 'postgresql' driver is not installed"),
        (["--model", "digits-cnn", "--budget", "1us", "--device", "h200", "--batch", "4"],
         "(latency source: estimate:roofline:h200); the h200 table shipped with autoq measured batches 1, 16, 128, not 4"),
        (["--model", "digits-cnn", "--storage", "optuna.db"], "Optuna storage 'optuna.db' is not a database URL; use one such as sqlite:///optuna.db"),
        (["--model", "digits-cnn", "--storage", "bogus://x"], "SQLAlchemy cannot open 'bogus' databases"),
        (["--batch", "0"], "batch (--batch: rows of activations per forward, for latency) must be at least 1, got 0"),
        # 10**310 rows overflowed the roofline's float: a traceback after the model loaded
        (["--budget", "1ms", "--device", "h100", "--batch", "1" + "0" * 310], "must be at most 2147483647 (2**31 - 1), got a number of 311 digits"),
        (["--skip", "fc", "--skip", ""], "--skip is '': give REGEX, or leave the option out"),  # refused as skipping every layer, once loaded
        (["--model", "digits-cnn", "--experiment", " "], "--experiment is ' ': give EXPERIMENT, or leave the option out"),
        # an unset $NAME in a script: '--resume ""' started a new search, '--study-name ""' took the default name
        (["--resume", ""], "--resume is '': give NAME, or leave the option out"),
        (["--study-name", ""], "--study-name is '': give STUDY_NAME"),
        # SQLite in memory: a search reported 'no search named ...' of its own new study
        (["--storage", "sqlite:///"], "Optuna storage 'sqlite:///' names no database file"),
        (["--model", "digits-cnn", "--tracking-uri", "sqlite://"], "MLflow tracking URI 'sqlite://' names no database file"),
        (["--model", "digits-cnn", "--skip", "a{99999999999}"], "invalid skip pattern 'a{99999999999}': the repetition number is too large"),
        (["--resume", "nightly", "--storage", "none"], "--resume nightly reads the search from its Optuna storage, and --storage none keeps none"),
        (["--resume", "nightly", "--storage", "NONE"], "--resume nightly reads the search from its Optuna storage, and --storage none keeps none"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, needle, tmp_path, capsys):
    """In this process (a traceback would fail the test itself); the exit status of a real process: below."""
    (tmp_path / "cli_test.py").write_text("")
    code, _, err = run_main("search", *args, "--no-progress", cwd=tmp_path, capsys=capsys)
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("autoq: error:")]
    assert len(errors) == 1 and needle in errors[0], err
    assert not (tmp_path / "mlflow.db").exists() or "budget" not in needle


@pytest.mark.parametrize("option, value, what", [("--pin", "*=fp16", "pin"), ("--skip", "(", "skip")])
def test_a_bad_pattern_is_refused_before_the_model_loads(option, value, what, tmp_path, capsys):
    """'--pin *=fp16' loaded (and trained) the model first: a Hugging Face model takes minutes to find the typo."""
    code, _, err = run_main("search", "--model", "digits-cnn", option, value, "--no-progress", cwd=tmp_path, capsys=capsys)
    assert code == 2 and f"invalid {what} pattern {value.split('=')[0]!r}" in err and "autoq: loading" not in err, err


def test_timeout_takes_none_as_its_errors_offer_it(tmp_path, capsys):
    """Its error said '(or None: no limit)', and argparse refused --timeout None as 'invalid float value'."""
    from autoq.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["search", "--timeout", "None"]).timeout is None
    assert parser.parse_args(["search", "--timeout", " none "]).timeout is None  # spaced as a number may be (float(' 90 '))
    assert parser.parse_args(["search", "--timeout", "90"]).timeout == 90.0
    code, _, err = run_main("search", "--timeout", "abc", cwd=tmp_path, capsys=capsys)
    assert code == 2 and "argument --timeout: 'abc' is not a number of seconds (or none: no limit)" in err


def test_main_puts_back_the_sigterm_handler_it_found(tmp_path, capsys):
    """A script or notebook calling ``autoq.cli.main`` keeps its own SIGTERM handler afterwards (main's raised
    `Terminated` there, in whatever code ran next)."""
    import signal

    def own(signum, frame):
        pass

    before = signal.signal(signal.SIGTERM, own)
    try:
        for args in (["search", "--budget", "nonsense"], ["runs", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]):
            code, _, _ = run_main(*args, cwd=tmp_path, capsys=capsys)
            assert code in (0, 2) and signal.getsignal(signal.SIGTERM) is own, args
    finally:
        signal.signal(signal.SIGTERM, before)


def test_feasible_range_is_stated(tmp_path):
    """As a real process: exit status 2, one line, no traceback."""
    proc = run_cli("search", "--model", "digits-cnn", "--budget", "2.01bits", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    [line] = [line for line in proc.stderr.splitlines() if line.startswith("autoq: error:")]
    assert "2.103 bits to 16.000 bits" in line  # 2.1026..., rounded up: the low end typed back is feasible


def test_no_quantizable_layer_in_a_real_model_dir(tmp_path):
    # a directory that is not a model at all
    (tmp_path / "empty").mkdir()
    proc = run_cli("search", "--model", str(tmp_path / "empty"), "--no-progress", cwd=tmp_path)
    assert proc.returncode == 2 and "no config.json" in proc.stderr and "Traceback" not in proc.stderr


def test_a_folder_tracking_store_mlflow_refuses_is_one_line_before_any_work(tmp_path):
    if not mlflow_refuses_folder_stores(tmp_path / "probe"):
        pytest.skip("this MLflow still accepts folder stores")
    proc = run_cli("search", "--model", "digits-cnn", "--tracking-uri", "./runs", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "autoq: error: MLflow cannot use the tracking URI './runs': The filesystem tracking backend" in proc.stderr


def test_a_tracking_server_that_does_not_answer_is_one_line_before_any_work(tmp_path):
    """In seconds: MLflow's own retries (about 4 minutes of silence) come after autoq's probe of /health."""
    proc = run_cli("search", "--model", "digits-cnn", "--tracking-uri", "http://127.0.0.1:9", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "autoq: error: MLflow tracking server http://127.0.0.1:9 does not answer" in proc.stderr and not (tmp_path / "optuna.db").exists()
    assert "autoq: loading" not in proc.stderr  # before the model loads (minutes for an LLM), as 'autoq sensitivity' does


def test_tracking_uri_and_storage_none_search_without_writing_a_file(tmp_path):
    proc = run_cli("search", "--model", "digits-cnn", "--budget", "4", "--n-trials", "3", "--tracking-uri", "none", "--storage", "none",
                   "--seed-from", "none", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Best within budget: trial" in proc.stdout and "MLflow" not in proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_a_store_in_a_new_folder_is_made_and_a_deleted_experiment_refused_before_the_study(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'new' / 'deeper' / 'mlflow.db'}"
    common = ["search", "--model", "digits-cnn", "--budget", "4", "--n-trials", "2", "--seed-from", "none", "--tracking-uri", uri]
    proc = run_cli(*common, cwd=tmp_path)
    assert proc.returncode == 0 and (tmp_path / "new" / "deeper" / "optuna.db").exists(), proc.stderr[-1500:]
    client = MlflowClient(uri)
    client.delete_experiment(client.create_experiment("gone", artifact_location=artifacts_beside(uri)))
    proc = run_cli(*common, "--experiment", "gone", "--study-name", "s", cwd=tmp_path)
    assert proc.returncode == 2 and "MLflow experiment 'gone' is deleted" in proc.stderr and "Traceback" not in proc.stderr
    import optuna

    assert "s" not in optuna.get_all_study_names(f"sqlite:///{tmp_path / 'new' / 'deeper' / 'optuna.db'}")  # the refused search left none


def test_help_lists_search():
    proc = subprocess.run([sys.executable, "-m", "autoq", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "search" in proc.stdout


def _wait_for_finished_trials(storage: str, study_name: str, count: int, meanwhile=lambda: None) -> None:
    """Wait (2 minutes at most) until the study another process runs holds ``count`` finished trials, calling
    ``meanwhile`` between looks."""
    import time

    import optuna

    deadline = time.time() + 120
    while time.time() < deadline:
        meanwhile()
        time.sleep(0.3)
        try:
            study = optuna.load_study(study_name=study_name, storage=storage)
        except Exception:  # noqa: BLE001 - the study does not exist yet
            continue
        if sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) >= count:
            return


@pytest.mark.parametrize(("signame", "caller"), [("SIGINT", "cli"), ("SIGTERM", "cli"), ("SIGHUP", "cli"), ("SIGTERM", "script")])
def test_interrupt_keeps_finished_trials(signame, caller, tmp_path, mlflow_uri):
    """Ctrl-C, a scheduler's SIGTERM and a closed terminal's SIGHUP stop the command as cleanly, and SIGTERM stops a
    script that calls ``autoq.search`` so too: the last two killed it as ``kill -9`` does, the run and a trial left
    RUNNING and no resume command said."""
    import signal

    import optuna
    from helpers import child_runs
    from mlflow.tracking import MlflowClient

    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "autoq", "search", "--model", "digits-cnn", "--n-trials", "100000", "--tracking-uri", mlflow_uri, "--no-progress", "--study-name", "interrupted"]
    if caller == "script":
        cmd = [sys.executable, "-c", "import autoq; autoq.search('digits-cnn', n_trials=100000, study_name='interrupted', "
                                     f"tracking_uri={mlflow_uri!r}, progress=False)"]
    # a shell without job control may start us with SIGINT ignored, which the child would inherit
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=lambda: [signal.signal(sig, signal.SIG_DFL) for sig in (signal.SIGINT, signal.SIGHUP)],  # nohup ignores HUP
    )
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    try:
        _wait_for_finished_trials(storage, "interrupted", 5)
        proc.send_signal(getattr(signal, signame))
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    if caller == "cli":
        assert proc.returncode == {"SIGINT": 130, "SIGTERM": 143, "SIGHUP": 129}[signame], err[-2000:]  # 128 + the signal, as shells expect
        assert "interrupted after" in err and "Traceback" not in err
    else:  # the script gets the stop as an exception, which it may catch; uncaught, Python's traceback shows it
        assert proc.returncode != 0 and "autoq.errors.SearchInterrupted: interrupted after" in err, err[-2000:]
    assert f"kept in the Optuna study and MLflow; continue with: autoq search --resume interrupted --tracking-uri {mlflow_uri}" in err

    study = optuna.load_study(study_name="interrupted", storage=storage)
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(finished) >= 5 and not any(t.state == optuna.trial.TrialState.RUNNING for t in study.trials)
    client = MlflowClient(mlflow_uri)
    parent = client.search_runs([client.get_experiment_by_name("autoq").experiment_id], filter_string="tags.`autoq.kind` = 'search'")[0]
    assert parent.info.status == "KILLED"
    children = child_runs(client, parent.info.run_id)
    # every finished trial is in MLflow; the one cut off mid-way may be logged but not yet told to Optuna
    assert len(finished) <= len(children) <= len(finished) + 1
    assert "frontier.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="a pseudo-terminal needs POSIX")
def test_a_closed_terminal_stops_a_search_with_129_and_its_trials_kept(tmp_path, mlflow_uri):
    """The terminal a search ran in closes (a window closed, an SSH session dropped): the kernel sends SIGHUP, and the
    terminal takes no more output. The note's write failed (EIO), and the command ended with status 1, not 129."""
    import pty
    import signal
    import time

    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    cmd = [sys.executable, "-m", "autoq", "search", "--model", "digits-cnn", "--n-trials", "100000", "--tracking-uri", mlflow_uri,
           "--storage", storage, "--no-progress", "--study-name", "hung-up"]
    pid, terminal = pty.fork()
    if pid == 0:  # the child: a session of its own, its terminal the pseudo-terminal
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        os.chdir(tmp_path)
        os.execve(sys.executable, cmd, {**os.environ, "PYTHONWARNINGS": "ignore"})
    os.set_blocking(terminal, False)
    def drain() -> None:  # keep the terminal drained: a full one would block the search's writes
        with contextlib.suppress(OSError):  # nothing to read yet
            os.read(terminal, 65536)

    try:
        _wait_for_finished_trials(storage, "hung-up", 3, drain)
        os.close(terminal)  # the terminal goes away
        deadline = time.time() + 120
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.time() < deadline:
            time.sleep(0.2)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert done[0] == pid and os.waitstatus_to_exitcode(done[1]) == 129
    study = optuna.load_study(study_name="hung-up", storage=storage)
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) >= 3
    assert not any(t.state == optuna.trial.TrialState.RUNNING for t in study.trials)


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="a pseudo-terminal needs POSIX")
@pytest.mark.parametrize("stdout", ["file", "terminal"])
def test_a_stop_note_the_terminal_cannot_take_leaves_a_callers_own_stdout_alone(stdout, tmp_path):
    """The note goes nowhere once the terminal hung up (EIO); stdout with it only where it is that terminal: a script
    that called main with its stdout to a file lost every line it printed after."""
    import pty

    master, terminal = pty.openpty()
    os.close(master)  # hung up: writes to it fail with EIO
    before = "print('before', flush=True); " if stdout == "file" else ""  # the hung-up terminal takes no line before either
    script = (f"import autoq.cli as c; {before}c._say_stopped('autoq: interrupted after 3 finished trial(s)'); "
              "print('after', flush=True)")
    with open(tmp_path / "out.txt", "w") as out:
        proc = subprocess.run([sys.executable, "-c", script], stdout=out if stdout == "file" else terminal, stderr=terminal, timeout=120)
    os.close(terminal)
    assert proc.returncode == 0  # a failed write (or flush at exit) would end it with 1 or 120
    if stdout == "file":
        assert (tmp_path / "out.txt").read_text() == "before\nafter\n"


@pytest.mark.parametrize(("args", "needle"), [
    (["export", "--run-id", "0123", "--out", ""], "--out is '': give OUT\n"),  # wrote into the working folder; required: no "leave it out"
    (["export", "--run-id", "0123", "--out", "o", "--model", " "], "--model is ' ': give MODEL"),  # loaded the default model
    (["pareto", ""], "name is '': give one ('autoq pareto --help' says what it is)"),
    (["runs", "--tracking-uri", "none"], "this command reads searches from an MLflow store, and --tracking-uri none names none"),
    (["pareto", "x", "--tracking-uri", "none"], "--tracking-uri none names none"),  # was MLflow's 'filesystem backend' message
    # a server that does not answer: MLflow's retries took about 4 minutes, then a traceback, or export's "no MLflow run"
    # ... and advises what a reader takes: it said '(none: no MLflow)', which it then refused
    (["runs", "--tracking-uri", "http://127.0.0.1:9"], "MLflow tracking server http://127.0.0.1:9 does not answer (ConnectionError); "
                                                       "start it (mlflow server), or pass the --tracking-uri your searches logged to\n"),
    (["export", "--run-id", "0123", "--out", "o", "--tracking-uri", "http://127.0.0.1:9"], "http://127.0.0.1:9 does not answer"),
    (["runs", "--tracking-uri", "http://alice:pw@127.0.0.1:9"], "server http://127.0.0.1:9 does not answer"),  # no credentials shown
    (["kernels", "bench", "--out", ""], "--out is '': give OUT"),  # an action of a command's own: it wrote latency_<device>.json
])
def test_commands_that_read_a_store_refuse_blank_and_missing_stores(args, needle, tmp_path, capsys):
    code, _, err = run_main(*args, cwd=tmp_path, capsys=capsys)
    assert code == 2
    assert needle in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, line", [
    (["search", "--n-trails", "5"], "autoq search: error: unrecognized arguments: --n-trails 5 (did you mean --n-trials for --n-trails?); "
                                    "'autoq search --help' lists the options"),
    # no abbreviation taken for the option (a budget below any option's bits: taken, it fails at once, not after a search)
    (["search", "--trackin", "none", "--budget", "0.5bits"], "(did you mean --tracking-uri for --trackin?)"),
    (["search", "--n-trails=5"], "unrecognized arguments: --n-trails=5 (did you mean --n-trials for --n-trails?)"),
    # no far-fetched guess: '--bits' is as close to --batch as argparse's cutoff (0.6) lets through
    (["search", "--bits", "4"], "autoq search: error: unrecognized arguments: --bits 4; 'autoq search --help' lists the options"),
    (["search", "--n-trials", "abc"], "autoq search: error: argument --n-trials: invalid int value: 'abc'; 'autoq search --help'"),
    # an option where --budget's value goes is no value: not the budget '--n-trials' and a stray '5'
    (["search", "--budget", "--n-trials", "5"], "autoq search: error: argument --budget: expected one argument; 'autoq search --help'"),
    (["kernels", "bench", "--formatz", "x"], "autoq kernels bench: error: unrecognized arguments: --formatz x (did you mean --formats"),
    # another command's option is named as such: it was "did you mean --max-retries for --metric?", "--set for --budget?"
    (["search", "--metric", "kl"], "unrecognized arguments: --metric kl (--metric is an option of 'autoq sensitivity'); 'autoq search --help'"),
    (["sensitivity", "--metric", "kl", "--budget", "4bits"], "--budget 4bits (--budget is an option of 'autoq search'); 'autoq sensitivity"),
])
def test_a_bad_option_is_one_line_naming_its_command_and_a_close_option(args, line, tmp_path, capsys):
    """argparse printed the top-level usage for a subcommand's typo, 13 lines of usage before a bad value, and took
    '--trackin' for --tracking-uri."""
    code, _, err = run_main(*args, cwd=tmp_path, capsys=capsys)
    assert code == 2 and line in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("argv, dest", [
    (["export", "--run-id", "r", "--out=~/q"], "out"), (["export", "--run-id", "r", "--out", "x", "--model", "~/bert"], "model"),
    (["search", "--space", "~/s.yaml"], "space"), (["search", "--seed-from", "~/t.json"], "seed_from"), (["search", "--device", "~/t.json"], "device"), (["search", "--model", "~/bert"], "model"),
    (["sensitivity", "--metric", "kl", "--out", "~/tables"], "out"), (["sensitivity", "--metric", "kl", "--space", "~/s.yaml"], "space"),
    (["kernels", "bench", "--out", "~/l.json"], "out"), (["kernels", "bench", "--model", "~/bert"], "model"),
])
def test_a_path_option_expands_a_leading_tilde(argv, dest, monkeypatch, tmp_path):
    """``--out=~/q`` (no shell expands it after '=') exported into a folder named '~' in the working folder."""
    from autoq.cli import build_parser

    monkeypatch.setenv("HOME", str(tmp_path))
    value = getattr(build_parser().parse_args(argv), dest)
    assert value.startswith(str(tmp_path) + os.sep) and "~" not in value
    assert build_parser().parse_args(["search", "--space", "per-channel"]).space == "per-channel"  # a preset's name as given


def test_a_reader_that_left_ends_the_command_with_141_and_no_traceback(tmp_path):
    """``autoq runs | head``: the reader closed the pipe; the command ends as Unix tools do there, 128 + SIGPIPE."""
    script = ("import sys, autoq.cli.search as search\n"
              "def run(args): raise BrokenPipeError\n"
              "search.run = run\n"
              "from autoq.cli import main\n"
              "sys.exit(main(['search', '--tracking-uri', 'none']))\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 141 and "Traceback" not in proc.stderr and "error" not in proc.stderr, proc.stderr


def test_a_database_or_file_error_is_one_line_and_a_warning_raised_as_an_error_is_not_taken_for_one(capsys):
    """Under python -W error, MLflow's own SADeprecationWarning (a sqlalchemy class) was reported as 'a database could
    not be opened or written ... check --storage and --tracking-uri': the wrong advice, and the warning hidden."""
    import argparse

    from sqlalchemy.exc import OperationalError, SADeprecationWarning

    from autoq.cli import _run, build_parser

    parser = build_parser()

    def failing(exc: Exception) -> argparse.Namespace:
        def run(args):
            raise exc
        args = parser.parse_args(["runs"])
        args.run, args.given = run, set()
        return args

    assert _run(parser, failing(OperationalError("SELECT 1", {}, Exception("unable to open database file"))), ()) == 2
    assert "autoq: error: a database could not be opened or written (OperationalError: unable to open database file)" in capsys.readouterr().err
    assert _run(parser, failing(OperationalError("INSERT", {}, Exception("database or disk is full"))), ()) == 2
    assert capsys.readouterr().err.rstrip().endswith("check --storage and --tracking-uri, and that their folders are writable and have free space")
    assert _run(parser, failing(PermissionError(13, "Permission denied", "/ro/out")), ()) == 2  # a folder's: its name said
    assert capsys.readouterr().err == "autoq: error: Permission denied: /ro/out\n"
    with pytest.raises(SADeprecationWarning, match="noload"):
        _run(parser, failing(SADeprecationWarning("The noload loader strategy is deprecated")), ())
