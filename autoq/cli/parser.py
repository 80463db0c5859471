"""argparse's parser with autoq's habits: no abbreviated options, and a bad option in one line that names a close one.

argparse prints the whole usage before an error (13 lines for ``autoq search``), reports an unknown option of a
subcommand with the top-level usage, and takes ``--trackin`` for ``--tracking-uri``; `--plugin` is read before
parsing, so an abbreviation of it would never load the plug-in.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
from typing import Any, NoReturn


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose subcommands are ``Parser`` too (``add_subparsers`` uses the parent's class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.elsewhere: dict[str, list[str]] = {}  # option -> the other commands that take it, set by `parse` for its error

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}{self._close_options(message)}; '{self.prog} --help' lists the options\n")

    def _close_options(self, message: str) -> str:
        """`` (did you mean --n-trials?)`` for an unknown option close to one of this parser's."""
        found = re.match(r"unrecognized arguments: (.*)", message)
        if not found:
            return ""
        options = [o for action in self._actions for o in action.option_strings if o.startswith("--")]
        close, other = [], []
        for word in found.group(1).split():
            name = word.split("=", 1)[0]
            if name in self.elsewhere:  # --metric to search: sensitivity's, not a typo of --max-retries
                other.append(f"{name} is an option of {' and '.join(repr(c) for c in self.elsewhere[name])}")
            elif name.startswith("--"):  # 0.7: at argparse's 0.6, --budget was taken for a typo of --set
                close += [f"{match} for {name}" for match in difflib.get_close_matches(name, options, n=1, cutoff=0.7)]
        said = [f"did you mean {', '.join(close)}?"] if close else []
        return f" ({'; '.join(said + other)})" if said or other else ""


def user_path(text: str) -> str:
    """A path option's value with a leading ``~`` expanded, as a shell expands a bare word: ``--out=~/q`` and a quoted
    ``"~/q"`` reach the command as written, and an export went into a folder named ``~`` in the working folder."""
    return os.path.expanduser(text)


def parse(parser: Parser, argv: list[str]) -> argparse.Namespace:
    """``parser.parse_args(argv)``, with arguments no option takes reported by the subcommand they were given to (its
    usage, its close options), not by the top-level parser."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        chosen = _subcommand(parser, args)
        own = {o for action in chosen._actions for o in action.option_strings}
        for command in _commands(parser):
            for option in {o for action in command._actions for o in action.option_strings} - own:
                chosen.elsewhere.setdefault(option, []).append(command.prog)
        chosen.error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def _commands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every command parser under ``parser`` that takes no further subcommand (``autoq search``, ``autoq kernels bench``)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [parser]
    return [leaf for sub in subs for command in dict.fromkeys(sub.choices.values()) for leaf in _commands(command)]


def _subcommand(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The deepest (sub)command parser ``args`` went through (``autoq kernels bench``'s, say)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = getattr(args, action.dest, None)
            if chosen in action.choices:
                return _subcommand(action.choices[chosen], args)
    return parser
