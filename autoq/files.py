"""Files: `write_text_atomic` (a file written whole or not at all), `make_folder` (an output folder, made up front),
`check_not_folder` (an output file that is no folder), `folder_lock` (one process at a time, on this machine, in a step over a folder's databases),
`file_crc32` (a file's checksum), `first_missing` and `nearest_folder` (where making a path starts), and `parse_json` (a JSON
file autoq reads, or one error that names it)."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from autoq.errors import AutoqError


def parse_json(text: str, what: str) -> Any:
    """``json.loads(text)``, or an error that starts with ``what``: not valid JSON (the parser's reason, line and column), or
    nested deeper than Python's parser recurses (a ``RecursionError`` and its traceback otherwise, from a file of a
    thousand '['; nothing autoq writes nests more than a few levels)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise AutoqError(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise AutoqError(f"{what} nests lists or objects too deeply to read (hundreds of levels); it is no file autoq wrote") from None


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` whole or not at all (`write_atomic`): a run killed mid-write leaves the old file (or none), never
    half a table that the next run would fail to read."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Have ``write`` fill a temporary file beside ``path``, then rename it over ``path``: another process reads the
    whole file or none, and a kill mid-write leaves the old one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the thread's id too: two threads of one process (two searches of one model in an outer study) shared the name, and
    # one's rename or clean-up took the other's file away mid-write
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:  # a write() the disk refused names no file: "No space left on
            # device", and the user could not tell which of a command's outputs (its --out, the cache) was full
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return path


def make_folder(path: str | Path, what: str) -> Path:
    """Make an output folder (and its parents) before the work that fills it: one that cannot be made (a read-only or
    missing mount) is an `AutoqError` naming it, not a traceback after minutes of quantization or scoring."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AutoqError(f"cannot make the {what} folder {str(path)!r}: {exc.strerror or exc}; pass a folder you can write to") from None
    if not os.access(path, os.W_OK):
        raise AutoqError(f"the {what} folder {str(path)!r} is not writable; pass a folder you can write to")
    return path


def file_crc32(path: str | Path, chunk: int = 1 << 24) -> str:
    """The CRC-32 of the file at ``path``, as 8 hex digits: what tells a file changed in place (same size, other bytes)
    from the one written. CRC-32, not a cryptographic hash: it guards against damage, not forgery (whoever edits the
    file can edit the record), at about twice SHA-256's speed."""
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            crc = zlib.crc32(block, crc)
    return f"{crc:08x}"


def first_missing(path: str | Path) -> Path | None:
    """The outermost folder of ``path`` (itself included) that does not exist yet: what making it will create first."""
    path = Path(path).absolute()
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def nearest_folder(path: str | Path) -> Path:
    """``path`` made absolute, or the nearest path above it that exists: where making it would start (the folder above
    :func:`first_missing`)."""
    missing = first_missing(path)
    return Path(path).absolute() if missing is None else missing.parent


@contextlib.contextmanager
def removed_if_empty(folder: Path, made_from: Path | None) -> Iterator[None]:
    """Remove ``folder`` again, and the empty folders above it up to ``made_from`` (`first_missing` before it was
    made; ``None``: it was there), if this command fails before writing into it (a refusal after the model loaded, a
    method that raises, a Ctrl-C): an empty folder left behind reads as output that went wrong later."""
    try:
        yield
    except BaseException:
        if made_from is not None:
            current = Path(folder).absolute()
            while current.is_dir() and not any(current.iterdir()):
                current.rmdir()
                if current == made_from or current.parent == current:
                    break
                current = current.parent
        raise


def check_not_folder(path: str | Path | None, option: str, example: str) -> None:
    """Refuse an output file's ``option`` naming a folder, before the work that fills it: refused as it was written,
    the work was lost (and the error named a temporary file); ``example``: a file name to suggest inside it."""
    if path and Path(path).is_dir():
        raise AutoqError(f"{option} {str(path)!r} is a folder; pass a file such as {str(Path(path) / example)!r}")


@contextlib.contextmanager
def folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (made if missing) for the block: a second process on this machine waits.

    It is ``flock`` on the folder itself, so no lock file is left beside the user's databases; where there is none
    (Windows) or the filesystem refuses it (some network mounts), the block runs unlocked. Not reentrant: a block must
    not take the same folder's lock again (it would wait for itself).
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    folder = Path(folder).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass  # no flock here: unlocked, as before there was a lock
        yield
    finally:
        os.close(fd)  # and with it the lock
