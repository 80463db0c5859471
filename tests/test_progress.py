"""Progress bars on a terminal and in a log (`autoq.progress`)."""

from __future__ import annotations

import io

import autoq
from autoq.progress import LOG_INTERVAL_S, is_text, progress_bar


def test_a_bar_in_a_log_is_drawn_seldom_and_on_a_terminal_as_tqdm_draws_it(monkeypatch):
    def interval(**options) -> float:
        with progress_bar(total=1, file=io.StringIO(), **options) as bar:
            return bar.mininterval

    monkeypatch.setattr("autoq.progress.to_terminal", lambda: False)
    assert interval() == LOG_INTERVAL_S and interval(mininterval=2) == 2  # given: kept
    monkeypatch.setattr("autoq.progress.to_terminal", lambda: True)
    assert interval() == 0.1  # tqdm's own


def test_a_notebooks_widget_is_not_held_back():
    """Under Jupyter tqdm.auto's class is made of tqdm.notebook's in tqdm.auto: told by its bases, not its module."""
    from tqdm.asyncio import tqdm as asyncio_tqdm
    from tqdm.auto import tqdm as auto_tqdm
    from tqdm.notebook import tqdm_notebook

    class Widget(tqdm_notebook, asyncio_tqdm):  # as tqdm.auto defines it in a notebook
        pass

    assert not is_text(Widget) and is_text(auto_tqdm) and is_text(asyncio_tqdm)


def test_a_search_logging_to_a_file_is_not_a_line_of_redraws(capsys):
    """Every trial and phase was a redraw in a log too: 121 carriage returns, 14 KB on one line, for 40 trials."""
    autoq.search("digits-cnn", budget="6bits", n_trials=12, seed_from="none", tracking_uri=None, storage=None, progress=True)
    draws = [d for d in capsys.readouterr().err.split("\r") if d.startswith("autoq search")]
    assert 2 <= len(draws) <= 5, draws  # as it starts, its first phase, and as it ends (the search takes seconds, not 30)
    assert draws[-1].startswith("autoq search: 100%") and "12/12" in draws[-1]


def test_a_python_search_that_shows_progress_ends_saying_where_its_results_are(mlflow_uri, capsys):
    """It ended without a word, where the command line prints its summary: which run holds it, how to open it."""
    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=4, seed_from="none", tracking_uri=mlflow_uri, storage=None, progress=True)
    err = capsys.readouterr().err
    best = result.best
    assert (f"autoq: search {result.study_name!r}: 4 trials in " in err
            and f"best quality {best.quality:.4f} at {best.effective_bits:.3f} bits (trial {best.trial}" in err)
    assert f"MLflow parent run {result.parent_run_id} in {mlflow_uri}; open it: mlflow ui --backend-store-uri {mlflow_uri}" in err
    autoq.search("digits-cnn", budget="4.5bits", n_trials=4, seed_from="none", tracking_uri=None, storage=None, progress=True)
    assert "kept in this result only (tracking_uri=None, storage=None)" in capsys.readouterr().err
    autoq.search("digits-cnn", budget="4.5bits", n_trials=4, seed_from="none", tracking_uri=None, storage=None, progress=False)
    assert capsys.readouterr().err == ""  # progress=False: silent, as before


def test_a_closed_or_replaced_stderr_is_not_a_terminal(monkeypatch):
    """A bar on such a stream is drawn as in a log, seldom: a closed stream's isatty raises, a replacement may have none."""
    import sys

    from autoq.progress import to_terminal

    closed = io.StringIO()
    closed.close()
    for stream in (closed, object()):
        monkeypatch.setattr(sys, "stderr", stream)
        assert to_terminal() is False
