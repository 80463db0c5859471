"""Quiet logging: third-party log levels, restored after."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest


class Kept(logging.Handler):
    """A handler that keeps each record it is given as (logger name, message)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.name, record.getMessage()))


def test_an_exported_model_loads_where_neither_mlflow_nor_optuna_is_installed(tmp_path):
    """A deployment needs torch, safetensors and (for a Hugging Face model) transformers, not the search's tools."""
    import torch
    from transformers import GPT2Config, GPT2Model

    import autoq
    from autoq.choice import Assignment, LayerChoice

    torch.manual_seed(0)
    model = GPT2Model(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=16)).eval()
    out = autoq.export(model, Assignment.from_dict({"h.0.mlp.c_fc": LayerChoice.from_name("int4-ch-asym:rtn-mse")}), tmp_path / "q", progress=False)
    script = f"""
import sys
sys.modules["mlflow"] = None  # import mlflow now raises ImportError, as where it is not installed
sys.modules["optuna"] = None
import autoq
from transformers.utils import logging
logging.set_verbosity_info()
model = autoq.load({str(out)!r})
assert type(model).__name__ == "GPT2Model" and logging.get_verbosity() == logging.INFO
print("loaded")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "loaded" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.parametrize("first_out", ["first", "second"])
def test_overlapping_calls_leave_the_levels_as_they_found_them(first_out):
    """Two searches in threads of an outer study (n_jobs=2): the second saved the first's quiet levels, and restoring
    them after the first had restored left transformers quiet for the rest of the process (Optuna at WARNING, before
    its lines were dropped by thread)."""
    import optuna
    from transformers.utils import logging as hf

    from autoq.quiet import quiet_logs

    before = (optuna.logging.get_verbosity(), hf.get_verbosity(), hf.is_progress_bar_enabled())
    optuna.logging.set_verbosity(optuna.logging.INFO)
    hf.set_verbosity_info()
    hf.enable_progress_bar()
    try:
        a, b = quiet_logs(), quiet_logs()
        a.__enter__()
        b.__enter__()
        assert hf.get_verbosity() == hf.ERROR
        out, last = (a, b) if first_out == "first" else (b, a)
        out.__exit__(None, None, None)
        assert hf.get_verbosity() == hf.ERROR  # the other still runs: quiet until it ends
        last.__exit__(None, None, None)
        assert optuna.logging.get_verbosity() == optuna.logging.INFO  # never changed
        assert hf.get_verbosity() == hf.INFO and hf.is_progress_bar_enabled()
        with quiet_logs():
            hf.set_verbosity_debug()  # the user's own change meanwhile is kept
        assert hf.get_verbosity() == hf.DEBUG
    finally:
        optuna.logging.set_verbosity(before[0])
        hf.set_verbosity(before[1])
        (hf.enable_progress_bar if before[2] else hf.disable_progress_bar)()


def test_optuna_and_mlflow_lines_are_dropped_in_the_quiet_thread_only():
    """Optuna's level was set to WARNING for the process while a search ran: an outer study's own "Trial N finished"
    lines, told in its other threads (n_jobs=2), were lost. Only the searching thread's INFO lines are dropped now."""
    import threading

    import mlflow  # noqa: F401 - its handler is made on import
    import optuna

    from autoq.quiet import _LibraryFilter, quiet_logs

    kept = Kept()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    libraries = [logging.getLogger("optuna"), logging.getLogger("mlflow")]
    levels = [logger.level for logger in libraries]
    for logger in libraries:
        logger.setLevel(logging.INFO)
        logger.addHandler(kept)
    try:
        inside, done = threading.Event(), threading.Event()

        def searching() -> None:
            with quiet_logs():
                logging.getLogger("optuna.study.study").info("search's trial")
                logging.getLogger("mlflow.store.db.utils").info("search's store")
                logging.getLogger("mlflow.store.db.utils").error("SQLAlchemy database error")  # the search reports it itself
                logging.getLogger("mlflow.store.db.utils").critical("search's critical")  # kept: only ERROR is the search's to report
                logging.getLogger("optuna.study.study").warning("search's warning")
                inside.set()  # its lines told: the outer thread's come after them, while it is still inside
                done.wait()

        thread = threading.Thread(target=searching)
        thread.start()
        inside.wait()
        logging.getLogger("optuna.study.study").info("outer trial")  # the outer study's thread, meanwhile
        logging.getLogger("mlflow.tracking").info("outer run")
        logging.getLogger("mlflow.store.db.utils").error("outer store error")  # another thread's: kept
        done.set()
        thread.join()
        logging.getLogger("optuna.study.study").info("after")
        assert kept.lines == [("mlflow.store.db.utils", "search's critical"), ("optuna.study.study", "search's warning"),
                              ("optuna.study.study", "outer trial"),
                              ("mlflow.tracking", "outer run"), ("mlflow.store.db.utils", "outer store error"),
                              ("optuna.study.study", "after")]
        assert not any(isinstance(f, _LibraryFilter) for logger in [*libraries, logging.getLogger()] for h in logger.handlers
                       for f in h.filters)  # taken off
        # a handler of a child logger is quieted too, and so is a record without its thread (logging.logThreads off)
        kept.lines.clear()
        child, childs = logging.getLogger("optuna.storages"), Kept()
        child.addHandler(childs)
        logging.logThreads = False
        try:
            with quiet_logs():
                child.info("child's line")
        finally:
            logging.logThreads = True
            child.removeHandler(childs)
        assert kept.lines == childs.lines == []
    finally:
        for logger, level in zip(libraries, levels):
            logger.removeHandler(kept)
            logger.setLevel(level)


def test_calls_that_use_neither_optuna_nor_mlflow_do_not_import_them_nor_change_a_hosts_sql_logger():
    """quiet_logs imported both to quiet them: a sensitivity table or a search without tracking took a second more, and
    MLflow's import set the host's sqlalchemy.engine logger to WARNING without its handler, for good. One loaded while
    a block runs (another thread's search with tracking) is quieted by an overlapping block."""
    script = """
import io, logging, sys
host = logging.getLogger("sqlalchemy.engine")
host.setLevel(logging.INFO)
host.addHandler(logging.StreamHandler(io.StringIO()))
import torch
from autoq.choice import LayerChoice
from autoq.model.layers import find_layers
from autoq.sensitivity import compute_table
model = torch.nn.Sequential(torch.nn.Linear(8, 8))
layers = find_layers(model, [])
compute_table(model, [torch.randn(4, 8)], layers, [[LayerChoice.from_name("int8-ch-asym:rtn-minmax")]], "mse", use_cache=False, progress=False)
print("mlflow" in sys.modules, "optuna" in sys.modules, host.level == logging.INFO and host.propagate and len(host.handlers) == 1)
from autoq.quiet import _LibraryFilter, quiet_logs
with quiet_logs():
    import mlflow  # loaded while a block runs
    with quiet_logs():  # overlapping: it quiets MLflow, which the first block did not
        print(any(isinstance(f, _LibraryFilter) for h in logging.getLogger("mlflow").handlers for f in h.filters))
print(any(isinstance(f, _LibraryFilter) for h in logging.getLogger("mlflow").handlers for f in h.filters))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.split() == ["False", "False", "True", "True", "False"], proc.stderr[-2000:]


def test_a_search_without_transformers_does_not_import_it_to_quiet_it():
    """quiet_logs imported transformers (about a second) for models that never use it, the digits CNN's search; a block
    that began before transformers was loaded does not keep an overlapping one from quieting it."""
    script = """
import sys
from autoq.quiet import quiet_logs
with quiet_logs():
    print("transformers" in sys.modules)
    import transformers.utils.logging as hf  # loaded while a block runs (another thread's Hugging Face load)
    before = hf.get_verbosity()
    with quiet_logs():  # overlapping: it quiets transformers, which the first block did not
        print(hf.get_verbosity() == hf.ERROR, hf.is_progress_bar_enabled())
    print(hf.get_verbosity() == before != hf.ERROR, hf.is_progress_bar_enabled())
with quiet_logs():  # the first block, ended, holds nothing: the next one quiets transformers
    print(hf.get_verbosity() == hf.ERROR)
print(hf.get_verbosity() == before)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.split() == ["False", "True", "False", "True", "True", "True", "True"], proc.stderr[-2000:]


def test_a_users_own_mlflow_link_printing_setting_is_left_as_it_is(monkeypatch):
    """autoq hides MLflow's 'View run at URL' lines only where the user set nothing: their own
    MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT=false stays, during the call and after it (it was overwritten, then deleted)."""
    import os

    import mlflow  # noqa: F401 - quiet_logs quiets the libraries loaded

    from autoq.quiet import quiet_logs

    monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "false")
    with quiet_logs():
        assert os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] == "false"
    assert os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] == "false"
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT")
    with quiet_logs():
        assert os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] == "true"  # unset: hidden for the call
    assert "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT" not in os.environ
    with quiet_logs():
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "false"  # the user's own, set during the call: kept
    assert os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] == "false"


def test_a_libraries_info_lines_are_dropped_from_the_roots_handlers_too():
    """Optuna's records reach the root logger's handlers where the user turned its propagation on: its INFO lines from
    inside quiet_logs are dropped there as well, and those after it are kept."""
    import optuna

    from autoq.quiet import quiet_logs

    root, kept = logging.getLogger(), Kept()
    level = logging.getLogger("optuna").level
    optuna.logging.set_verbosity(optuna.logging.INFO)
    optuna.logging.enable_propagation()
    root.addHandler(kept)
    try:
        with quiet_logs():
            logging.getLogger("optuna.study.study").info("search's trial")
        logging.getLogger("optuna.study.study").info("after")
    finally:
        root.removeHandler(kept)
        optuna.logging.disable_propagation()
        logging.getLogger("optuna").setLevel(level)
    assert kept.lines == [("optuna.study.study", "after")]


def test_transformers_progress_bars_the_user_turned_off_stay_off():
    """quiet_logs turns transformers' progress bars back on after the call only where they were on before it."""
    from transformers.utils import logging as hf

    from autoq.quiet import quiet_logs

    before = hf.is_progress_bar_enabled()
    hf.disable_progress_bar()
    try:
        with quiet_logs():
            assert not hf.is_progress_bar_enabled()
        assert not hf.is_progress_bar_enabled()
    finally:
        (hf.enable_progress_bar if before else hf.disable_progress_bar)()
