"""Progress bars: tqdm's (a notebook's widget under Jupyter), redrawn seldom where stderr is not a terminal.

A log file or a CI job's output took every redraw as carriage returns on one line: 121 of them, 14 KB, for a
40-trial search of a small model. There the bar is drawn as it starts, every ``LOG_INTERVAL_S`` and as it ends."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

LOG_INTERVAL_S = 30.0  # seconds between redraws in a log: a long search still says how far it is, and its ETA


def progress_bar(**options: Any) -> tqdm:
    """``tqdm(**options)``, with ``mininterval=LOG_INTERVAL_S`` (unless given) where the bar is text on a stderr that is not a terminal."""
    if not to_terminal() and is_text(tqdm):
        options.setdefault("mininterval", LOG_INTERVAL_S)
    return tqdm(**options)


def is_text(bar_class: type) -> bool:
    """Whether tqdm.auto's bar is text (not a notebook's widget, which redraws in place: tqdm.auto makes its class of
    tqdm.notebook's, in a module of its own)."""
    return not any(c.__module__ == "tqdm.notebook" for c in bar_class.__mro__)


def to_terminal() -> bool:
    """Whether stderr (where the bars go) is a terminal; a closed or replaced stream without ``isatty`` is not."""
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False
