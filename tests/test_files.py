"""write_text_atomic: the old file or the new one, never half of one."""

from __future__ import annotations

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
