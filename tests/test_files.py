"""write_text_atomic: the old file or the new one, never half of one."""

from __future__ import annotations

import errno
import os
import threading

import pytest

from autoq.files import write_atomic, write_text_atomic


def test_writes_and_replaces(tmp_path):
    path = write_text_atomic(tmp_path / "sub" / "t.json", "one")
    assert path.read_text() == "one"
    write_text_atomic(path, "two")
    assert path.read_text() == "two" and sorted(p.name for p in path.parent.iterdir()) == ["t.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = write_text_atomic(tmp_path / "t.json", "old")
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(path, "\ud800")  # a lone surrogate cannot be encoded: the write fails midway
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["t.json"]


def test_two_threads_writing_one_file_keep_their_own_temporary_files(tmp_path):
    """The temporary file was named by process alone: a second thread's write, done while the first one's was under
    way, took that file away, and the first failed (FileNotFoundError) though the file was written."""
    path = tmp_path / "t.json"

    def first(tmp):
        tmp.write_text("first")
        other = threading.Thread(target=write_text_atomic, args=(path, "second"))
        other.start()
        other.join()
        assert path.read_text() == "second"

    write_atomic(path, first)
    assert path.read_text() == "first" and list(tmp_path.iterdir()) == [path]  # the last write whole, no file left over


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="/dev/full is Linux's always-full device")
def test_a_write_the_disk_refuses_names_the_file_it_was_for(tmp_path):
    """A failed write() carries no file name: "No space left on device" alone did not say which output was full."""

    def fill(tmp):
        with open("/dev/full", "w") as full:
            full.write("x" * 100_000)

    with pytest.raises(OSError) as refused:
        write_atomic(tmp_path / "table.csv", fill)
    assert refused.value.errno == errno.ENOSPC and refused.value.filename == str(tmp_path / "table.csv")
    assert list(tmp_path.iterdir()) == []
