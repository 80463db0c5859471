"""autoq's notes and warnings (``autoq.messages``): what a pipeline calling autoq can silence, route or escalate."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings

import pytest

from autoq.cli import main
from autoq.errors import AutoqWarning
from autoq.messages import LOGGER, cli_warnings, note, warn


@pytest.fixture
def autoq_logger():
    """The ``autoq`` logger, its level and propagation put back after the test."""
    log = logging.getLogger(LOGGER)
    level, propagate, handlers = log.level, log.propagate, list(log.handlers)
    yield log
    log.setLevel(level)
    log.propagate = propagate
    log.handlers[:] = handlers


def test_a_note_goes_to_stderr_as_it_is_then_and_a_level_silences_it(autoq_logger, capsys):
    note("first")
    assert capsys.readouterr().err == "autoq: note: first\n"  # pytest's capture, made after the handler: read at each note
    autoq_logger.setLevel(logging.WARNING)
    note("second")
    assert capsys.readouterr().err == ""


def test_notes_go_to_the_callers_logging_once_it_takes_them(autoq_logger, capsys, caplog):
    autoq_logger.handlers.clear()  # as the README says, before any note (it was undone by the first one)
    autoq_logger.propagate = True
    with caplog.at_level(logging.INFO, logger=LOGGER):
        note("routed")
    assert capsys.readouterr().err == "" and [r.getMessage() for r in caplog.records] == ["routed"]


SET_UP_FIRST = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="root: %(message)s", stream=sys.stdout)
logging.getLogger("autoq").setLevel(logging.INFO)  # set up by the caller before autoq is imported
import autoq
from autoq.messages import note
note("kept to the caller's logging")
print(len(logging.getLogger("autoq").handlers), logging.getLogger("autoq").propagate)
"""


def test_a_logger_the_caller_set_up_before_importing_autoq_is_left_as_it_was():
    done = subprocess.run([sys.executable, "-c", SET_UP_FIRST], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["root: kept to the caller's logging", "0 True"] and "autoq: note" not in done.stderr


def test_a_note_is_not_also_handed_to_the_root_loggers_handlers():
    """autoq's logger does not propagate: a pipeline's ``logging.basicConfig()`` after the import does not print each
    note a second time (as ``INFO:autoq:...``)."""
    code = "import logging, autoq; logging.basicConfig(level=logging.INFO); from autoq.messages import note; note('once')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert done.stderr.count("once") == 1 and "autoq: note: once" in done.stderr, done.stderr


def _library_function() -> None:
    warn("from the library")


def test_a_warning_points_at_the_line_that_called_the_function_that_warns():
    """warn()'s default stacklevel names the user's line, not autoq's own: the filename and line a filter and the
    once-per-location registry go by."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        line = sys._getframe().f_lineno + 1
        _library_function()
    [w] = seen
    assert (w.filename, w.lineno) == (__file__, line)


def test_a_warning_is_an_autoq_warning_that_a_filter_escalates():
    with pytest.warns(AutoqWarning, match="^careful$"):
        warn("careful")
    with warnings.catch_warnings():
        warnings.simplefilter("error", AutoqWarning)
        with pytest.raises(AutoqWarning, match="careful"):
            warn("careful")


def test_the_command_line_prints_autoq_warnings_as_lines_and_puts_the_display_back(capsys):
    shown = warnings.showwarning
    with cli_warnings():
        warn("a fallback was taken")
        warn("a fallback was taken")  # each time: a command runs one job
        with pytest.warns(DeprecationWarning):  # another library's goes to the display in place (here pytest's)
            warnings.warn("another library's", DeprecationWarning, stacklevel=1)
    assert capsys.readouterr().err == "autoq: warning: a fallback was taken\n" * 2
    assert warnings.showwarning is shown


def test_the_command_lines_display_honours_a_file_and_leaves_other_warnings_to_the_display_that_was_there(capsys):
    """An autoq warning shown with ``file=`` is written there; another library's goes to the display in place (here a
    recorder), not printed as an autoq line."""
    import io

    buffer = io.StringIO()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with cli_warnings():
            warnings.showwarning("to the file", AutoqWarning, "x.py", 1, file=buffer)
            warnings.warn("plain", UserWarning, stacklevel=1)
    assert buffer.getvalue() == "autoq: warning: to the file\n" and [str(w.message) for w in seen] == ["plain"]
    assert capsys.readouterr().err == ""


def test_a_search_command_prints_its_warning_as_a_line(tmp_path, capsys, monkeypatch):
    """The seeding fallback of a search from the command line: an AutoqWarning, shown as 'autoq: warning: ...'."""
    import autoq.engine.seeding as seeding

    def no_table(*args, **kwargs):
        raise FileNotFoundError("no table here")

    monkeypatch.setattr(seeding, "seed_table", no_table)
    code = main(["search", "--model", "digits-cnn", "--budget", "4.5bits", "--n-trials", "12", "--tracking-uri", "none", "--storage", "none",
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "autoq: warning: no fisher sensitivity table for seeding (FileNotFoundError: no table here)" in err, err


def test_a_library_search_without_progress_says_only_notes_which_the_loggers_level_silences(autoq_logger, capsys):
    """progress=False turned off the bars, but notes (here: a budget above the dearest assignment) were prints no caller
    could turn off."""
    import torch
    from torch import nn

    import autoq

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 8)).eval()
    data = [torch.randn(16, 32) for _ in range(4)]

    def search():
        autoq.search(model, data, budget="20bits", n_trials=3, tracking_uri=None, storage=None, progress=False, seed_from="none")
        return capsys.readouterr().err

    said = search()
    assert said.startswith("autoq: note: budget '20bits' is above the dearest assignment") and all(
        line.startswith("autoq: note: ") for line in said.splitlines()), said
    autoq_logger.setLevel(logging.WARNING)
    assert search() == ""


def test_warnings_ignored_in_overlapping_threads_leaves_no_filter_behind():
    """Two `catch_warnings` blocks overlapping in threads restore each other's snapshots: a pipeline's thread pool of
    searches was left ignoring Optuna's ExperimentalWarning for good. Off the main thread the filters are not touched."""
    import threading

    from autoq.messages import warnings_ignored

    before = list(warnings.filters)
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with warnings_ignored(UserWarning, "first"):
            first_in.set()
            second_in.wait(10)
        first_out.set()

    def second() -> None:
        first_in.wait(10)
        with warnings_ignored(RuntimeWarning, "second"):
            second_in.set()
            first_out.wait(10)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert first_out.is_set() and list(warnings.filters) == before


def test_warnings_ignored_on_the_main_thread_ignores_and_restores():
    from autoq.messages import warnings_ignored

    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with warnings_ignored(RuntimeWarning, "Unrecognized"):
            warnings.warn("Unrecognized options: x", RuntimeWarning, stacklevel=1)
            warnings.warn("something else", RuntimeWarning, stacklevel=1)
        warnings.warn("Unrecognized options: y", RuntimeWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["something else", "Unrecognized options: y"]
    assert list(warnings.filters) == before
