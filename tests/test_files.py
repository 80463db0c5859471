"""write_text_atomic: the old file or the new one, never half of one."""

from __future__ import annotations

import pytest

from autoq.files import write_text_atomic


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
