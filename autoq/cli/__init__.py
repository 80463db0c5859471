"""``autoq`` command line: thin shells over the Python API, one module per subcommand.

Every module in this package that defines ``add_parser(subparsers)`` is a
subcommand (``autoq search``, ...); it registers its parser and sets
``run=...`` as the parser default. User errors print one line
(``autoq: error: ...``) and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

from autoq.cli.mlflow_args import fill_experiment
from autoq.cli.parser import Parser, parse
from autoq.errors import AutoqError, SearchInterrupted, Terminated, any_database_failed, database_reason
from autoq.interrupts import stops_as_interrupts
from autoq.messages import cli_warnings
from autoq.plugins import ENTRY_POINT_GROUP, ENV_VAR, load_plugins, plugin_note, split_plugins


def build_parser() -> argparse.ArgumentParser:
    from autoq import __version__

    # no abbreviations (its default): '--plug X' would parse as --plugin, which is read before parsing
    parser = Parser(prog="autoq", description="Automated mixed-precision quantization search for PyTorch.")
    parser.add_argument("--version", action="version", version=f"autoq {__version__}")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE (a module name or a .py file) first: its PTQ methods, metrics, strategies, samplers "
                             f"and kernels become names autoq knows; repeatable, allowed after the command too (also ${ENV_VAR} "
                             f"and '{ENTRY_POINT_GROUP}' entry points)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "add_parser"):
            module.add_parser(sub)
    return parser


def given_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The dests of the options ``argv`` sets itself (an option given at its default value included): ``parser`` (done
    with: its defaults are suppressed here) parses ``argv`` again, and leaves only those in the namespace."""

    def suppress(p: argparse.ArgumentParser) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    suppress(child)
            else:
                action.default = argparse.SUPPRESS
        p._defaults.clear()

    suppress(parser)
    namespace, _ = parser.parse_known_args(argv)
    return set(vars(namespace)) - {"command"}


def refuse_blank(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """An option given as an empty or blank string is an error: every name, path and URL autoq takes needs one. Read as
    left out it changed what ran: ``--resume "$NAME"`` with ``NAME`` unset started a new search, ``--out ''`` wrote into
    the working folder."""
    actions, level = list(parser._actions), parser
    while (sub := next((a for a in level._actions if isinstance(a, argparse._SubParsersAction)), None)) is not None:
        level = sub.choices[getattr(args, sub.dest)]  # the command, then its action ('autoq kernels bench')
        actions += level._actions
    for action in actions:
        given = getattr(args, action.dest, None)
        # each of an option given again and again (--skip A --skip "$B"): a list, which passed unread, and an empty --skip
        # was refused only after the model loaded (as skipping every layer)
        blank = [v for v in (given if isinstance(given, list) else [given]) if isinstance(v, str) and not v.strip()]
        if action.dest in args.given and blank:
            value = blank[0]
            what = action.metavar or (action.dest.upper() if action.option_strings else action.dest)
            if action.option_strings:
                left_out = "" if action.required else ", or leave the option out"  # a required one is refused left out
                raise AutoqError(f"{'/'.join(action.option_strings)} is {value!r}: give {what}{left_out}")
            raise AutoqError(f"{what} is {value!r}: give one ('autoq {args.command} --help' says what it is)")


def _say_stopped(text: str) -> None:
    """``text`` on stderr, where a stopped search says what it kept; a terminal that hung up (its window closed: the
    SIGHUP that stopped the search) takes no more writes (EIO), so the output goes nowhere from then on: the write's
    error ended the command with status 1 instead of 129, and flushing at exit failed again."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):  # EIO, or a stream already closed
        with contextlib.suppress(OSError, ValueError):
            err = sys.stderr.fileno()
            # stdout too where it is the same terminal (its flush at exit would fail): not a file of a caller's own, which
            # a script that called main goes on writing to
            same = [sys.stdout.fileno()] if os.path.samestat(os.fstat(sys.stdout.fileno()), os.fstat(err)) else []
            null = os.open(os.devnull, os.O_WRONLY)
            for fd in (err, *same):
                os.dup2(null, fd)


def _exit_status(exc: BaseException) -> int:
    """128 + the signal for a stop by SIGTERM or SIGHUP (also behind the `SearchInterrupted` it became: 143, 129), else
    Ctrl-C's 130."""
    stop = exc if isinstance(exc, Terminated) else exc.__cause__
    return 128 + stop.signum if isinstance(stop, Terminated) else 130


# options whose value may begin with '-' ('--budget -1bits'): argparse would read it as an unknown option
_SIGNED = ("--budget", "--seed", "--timeout")


def _join_signed_values(argv: Sequence[str]) -> list[str]:
    """``--budget -1bits`` as ``--budget=-1bits``, so that the value gets autoq's message, not argparse's usage."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in _SIGNED and arg.startswith("-") and not arg.startswith("--"):  # out[-1] is the option itself
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        plugins, argv = split_plugins(argv)
        if argv != ["--version"]:  # the version is said whatever a plug-in does
            plugins = load_plugins(plugins)  # before the parser: its help lists what they register; all of them, as loaded
    except AutoqError as exc:
        print(f"autoq: error: {exc}", file=sys.stderr)
        return 2
    parser = build_parser()
    argv = _join_signed_values(argv)
    args = parse(parser, argv)
    args.plugins = plugins  # for the follow-up commands a search prints (also those of $AUTOQ_PLUGINS and entry points)
    args.given = given_options(parser, argv)  # what `--resume` must not replace with the stored search's values
    # a scheduler's TERM and a closed terminal's HUP stop as cleanly as Ctrl-C, while main runs: a script or notebook that
    # calls it keeps its own handlers after; nohup's ignored HUP stays ignored
    with stops_as_interrupts(replace=True), cli_warnings():  # autoq's warnings as 'autoq: warning: ...' lines
        return _run(parser, args, plugins)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, plugins: Sequence[str]) -> int:
    """The command itself, its user errors and stops turned into one line and an exit status."""
    try:
        refuse_blank(parser, args)
        fill_experiment(args)
        return int(args.run(args) or 0)
    except AutoqError as exc:
        print(f"autoq: error: {exc}", file=sys.stderr)
        return 2
    except SearchInterrupted as exc:
        note = plugin_note(plugins)
        _say_stopped(f"autoq: {exc}" + (f" ({note})" if note else ""))
        return _exit_status(exc)
    except KeyboardInterrupt as exc:
        _say_stopped("autoq: interrupted")
        return _exit_status(exc)
    except BrokenPipeError:  # `autoq runs | head`: the reader left; say nothing more, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # a folder that cannot be written, a disk that is full: the user's to fix, no traceback
        where = f": {exc.filename}" if exc.filename else ""
        print(f"autoq: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not any_database_failed(exc):
            raise
        # a database (Optuna storage, MLflow store) that cannot be opened or written: the driver's own words
        reason = database_reason(exc)
        full = " and have free space" if "full" in reason else ""
        print(f"autoq: error: a database could not be opened or written ({reason}); check --storage and --tracking-uri, "
              f"and that their folders are writable{full}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
