"""User-facing errors.

Anything a user can fix (a bad budget, an unknown layer, NaN in data) raises
:class:`AutoqError`; the CLI prints its message on one line and exits with status 2.
"""

from __future__ import annotations


class AutoqError(ValueError):
    """A problem with the user's input, explained in the message."""


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a search; the message says what was kept and how to continue it."""
