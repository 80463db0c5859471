"""What a search says as it stops: how it was cut short, what it kept and the command that continues it.

Also the warning for a result that looks upside down (an ``evaluate`` that returns a loss). Words only: the search
loop (:mod:`autoq.engine.runner`) decides when each is said.
"""

from __future__ import annotations

import errno
import math
import shlex
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from autoq.engine.ray_session import ray_options_set
from autoq.engine.resume import read_run_id
from autoq.errors import AutoqError, database_reason
from autoq.messages import note
from autoq.tracking import absolute_uri, sqlite_path
from autoq.tracking.mlflow_logger import credentials_note, shown_uri, store_failed

if TYPE_CHECKING:
    from autoq.engine.result import Point
    from autoq.engine.runner import SearchConfig
    from autoq.engine.trials import TrialBook


def above_reference(reference: float, points: Sequence[Point]) -> str | None:
    """Why the result may be upside down: most quantized points score above the unquantized model, which is what an
    ``evaluate`` returning a loss (lower is better) looks like: autoq maximized it, and its best point was the most
    damaged one (an MSE of 0.0052 at 2.65 bits), without a word."""
    if not math.isfinite(reference) or len(points) < 3:
        return None
    qualities = sorted(p.quality for p in points)
    higher = sum(q > reference + 1e-9 * max(1.0, abs(reference)) for q in qualities)
    if 2 * higher <= len(qualities):
        return None
    return (f"{higher} of {len(qualities)} quantized points score above the unquantized model ({reference:.4g}; median "
            f"{qualities[len(qualities) // 2]:.4g}): autoq maximizes quality, so evaluate(model) must return a higher-is-better "
            "number (accuracy, or -loss); a loss is maximized, and the best point found is then the most damaged one")


def interrupted_note(config: SearchConfig, book: TrialBook, study_name: str, storage: str | None, tracked: bool, by_name: bool = True) -> str:
    """What an interrupted search kept, and the command that continues it."""
    return f"interrupted after {book.n_done} finished trial(s)" + kept_and_how_to_continue(config, study_name, storage, tracked, by_name)


def store_stopped(config: SearchConfig, exc: Exception, what: str, study_name: str, storage: str | None, by_name: bool,
                   resume_does: str = "") -> AutoqError:
    """The error for a search its tracking store stopped: the store's failure, ``what`` became of the search, where its
    trials are kept and the command that continues it once the store answers (``resume_does``: what that resume writes)."""
    return store_failed(config.tracking_uri or "", exc, what + kept_and_how_to_continue(config, study_name, storage, True, by_name)
                        + f" ({_store_back(exc)}{resume_does})")


def _store_back(exc: BaseException) -> str:
    """When a resume can go on after the store's failure: "once the store answers again" was said of a local disk that
    refused a write too (a folder not the user's, a read-only file), where a resume fails the same way until that changes."""
    cause = exc.__cause__
    reason = database_reason(exc).lower()
    if (isinstance(cause, OSError) and cause.errno == errno.ENOSPC) or "disk is full" in reason:
        return "once its disk has free space again"
    if (isinstance(cause, OSError) and cause.errno is not None) or "readonly" in reason:  # a local file's own error
        return "once it can be written again"
    return "once the store answers again"


def storage_stopped(config: SearchConfig, exc: Exception, n_done: int, study_name: str, storage: str | None, tracked: bool,
                    by_name: bool) -> AutoqError:
    """The error for a search whose Optuna storage failed a write (its disk full, its file gone read-only): the
    database's own words, and the command that continues the search once it can be written again. It was a traceback
    of Optuna's "exception is raised during the commit", which said neither what failed nor that the trials were kept."""
    reason = database_reason(exc)
    when = "once its disk has free space again" if "full" in reason else "once it can be written again"
    return AutoqError(f"the Optuna storage {storage} failed a write ({reason}); the search stopped after {n_done} "
                      f"finished trial(s){kept_and_how_to_continue(config, study_name, storage, tracked, by_name)} ({when})")


def say(bar: tqdm, text: str) -> None:
    """``autoq: text`` on stderr while the bar is open: tqdm's write puts it above the bar (a print joined the bar's line).
    Without a bar (``progress=False``) it is a note (:func:`autoq.messages.note`): a batch job's log still says it,
    and a pipeline can silence it with the ``autoq`` logger's level."""
    if bar.disable:
        note(text)
        return
    bar.write(f"autoq: {text}", file=sys.stderr)
    sys.stderr.flush()


def kept_and_how_to_continue(config: SearchConfig, study_name: str, storage: str | None, tracked: bool, by_name: bool = True) -> str:
    """Where a search's finished trials are kept, and the command that continues it (the Python call alone for a model
    passed from Python, ``by_name`` false: a command line cannot name it, and would load the default model to be refused)."""
    if storage is None:
        kept = "MLflow keeps them, but with --storage none it cannot be resumed" if tracked else "nothing keeps them (--storage none, --tracking-uri none)"
        return f"; {kept}"
    # the storage is implied only as the one beside a named SQLite MLflow store; without MLflow, or with a tracking
    # server, 'auto' is optuna.db of the folder the search ran in: the command names it (absolute; and without MLflow
    # says --tracking-uri none, else the resume logged every trial to a new mlflow.db), or from another folder it found none
    beside = config.storage == "auto" and config.tracking_uri and sqlite_path(config.tracking_uri) is not None
    options = [] if beside else [f"--storage {shlex.quote(storage)}"]
    if config.tracking_uri:  # absolute: the command finds the same store (and the storage beside it) from any folder
        options.insert(0, f"--tracking-uri {shlex.quote(shown_uri(absolute_uri(config.tracking_uri)))}")
    else:
        options.insert(0, "--tracking-uri none")
    if config.backend == "ray":  # the stored settings do not hold how the trials ran: without these it goes on in-process
        options += ["--backend ray", f"--workers {config.workers}"] + [
            f"--{name.replace('_', '-')} {shlex.quote(str(value))}" for name, value in ray_options_set(config).items()]
    command = " ".join(["autoq search --resume", shlex.quote(study_name), *options])
    where = "the Optuna study" + (" and MLflow" if tracked else "")
    # storage='auto' is found from the folder the call runs in: the hint names the database, to be found from any folder
    where_stored = f", storage={storage!r}" if config.storage == "auto" else ""
    python = f"the same call with resume=True, study_name={study_name!r}{where_stored}, n_trials={config.n_trials}"
    if not by_name:
        return f", kept in {where}; continue with {python} (and the same model and data)"
    return f", kept in {where}; continue with: {command}   (Python: {python}){credentials_note(config.tracking_uri)}"


def recorded_run(storage: str | None, study_name: str) -> str | None:
    """The MLflow run the study recorded, or ``None`` (none yet, or a storage that cannot say now: an interrupt's note
    must not fail in turn)."""
    try:
        return read_run_id(storage, study_name)
    except Exception:  # noqa: BLE001 - the note then says what is certain, the Optuna study
        return None
