"""The search bar's word on the trial it is in (`autoq.engine.live`)."""

from __future__ import annotations

import io

from tqdm import tqdm

import autoq
from autoq.engine.live import TrialStatus


def test_the_phase_follows_the_description_and_redraws_at_most_twice_a_second():
    out = io.StringIO()
    bar = tqdm(total=4, desc="autoq search", file=out, mininterval=0)
    status = TrialStatus(bar, every=3600)
    status.layers(0, 3)
    assert "autoq search [quantizing layer 1/3]" in out.getvalue()
    status.layers(1, 3)  # within the interval: set, not drawn
    assert bar.desc == "autoq search [quantizing layer 2/3]" and "layer 2/3" not in out.getvalue()
    status.layers(3, 3)  # all done: the scoring, next, says so at once
    assert bar.desc == "autoq search [quantizing layer 2/3]"
    status.scoring()
    assert out.getvalue().split("\r")[-1].startswith("autoq search [scoring]:")
    status.clear()
    bar.update(1)  # the trial's step draws what is current
    assert out.getvalue().split("\r")[-1].startswith("autoq search:")
    bar.close()


def test_a_search_with_its_bar_says_which_layer_it_quantizes(capsys, monkeypatch):
    monkeypatch.setattr("autoq.progress.to_terminal", lambda: True)  # in a log it is drawn seldom (tests/test_progress.py)
    autoq.search("digits-cnn", budget="6bits", n_trials=2, seed_from="none", tracking_uri=None, storage=None, progress=True)
    err = capsys.readouterr().err
    lines = err.split("\r")
    assert any(line.startswith("autoq search [quantizing layer 1/4]:") for line in lines)  # the first draw is never held back
    assert any(line.startswith("autoq search [scoring]:") for line in lines)  # a new phase is drawn at once
    assert [line for line in lines if line.strip()][-1].startswith("autoq search:")  # the bar ends under its own name


def test_a_bar_in_a_log_is_drawn_no_more_often_for_its_phases():
    """A bar redrawn at most every 30 s (in a log: `autoq.progress`) is not forced to redraw for each new phase: a
    log had a line for every layer and every scoring pass."""
    out = io.StringIO()
    bar = tqdm(total=4, desc="autoq search", file=out, mininterval=30)
    status = TrialStatus(bar, every=0.5)
    assert status.every == 30 and not status.forced
    status.layers(0, 3)  # the first draw
    drawn = out.getvalue()
    for _ in range(3):
        status.scoring()
        status.layers(1, 3)
    assert out.getvalue() == drawn
    bar.close()
