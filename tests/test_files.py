"""write_text_atomic: the old file or the new one, never half of one; parse_json: a JSON file autoq reads, or one error."""

from __future__ import annotations

import errno
import os
import threading

import pytest

from autoq.errors import AutoqError
from autoq.files import make_folder, nearest_folder, parse_json, write_atomic, write_text_atomic


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


DEEP = "[" * 5000 + "]" * 5000  # deeper than Python's parser recurses (it failed from about 1,000)


def test_json_nested_too_deeply_is_one_error_in_every_file_autoq_reads(tmp_path):
    """A RecursionError traceback before: '--device', '--seed-from', an assignment, an export's config."""
    from autoq.choice import Assignment
    from autoq.export.config import CONFIG_NAME, read_config
    from autoq.kernels.table import LatencyTable
    from autoq.sensitivity import SensitivityTable

    assert parse_json("[[1], {}]", "x") == [[1], {}]
    with pytest.raises(AutoqError, match=r"^latency table .* is not valid JSON: Expecting"):
        parse_json("{not json", f"latency table {tmp_path}")
    (tmp_path / "table.json").write_text(DEEP)
    (tmp_path / CONFIG_NAME).write_text(DEEP)
    reads = {"latency table": lambda: LatencyTable.load(tmp_path / "table.json"), CONFIG_NAME: lambda: read_config(tmp_path),
             "sensitivity table": lambda: SensitivityTable.from_json(DEEP), "assignment": lambda: Assignment.from_json(DEEP)}
    for what, read in reads.items():
        with pytest.raises(AutoqError, match="nests lists or objects too deeply to read") as info:
            read()
        assert what in str(info.value)
    with pytest.raises(AutoqError, match=r"line 1 of the sensitivity table, '# metric: \.\.\.', does not hold a JSON value"):
        SensitivityTable.from_csv(f"# metric: {DEEP}\nlayer,option,score\n")


def test_the_nearest_folder_is_the_path_or_the_first_one_above_it_that_exists(tmp_path):
    assert nearest_folder(tmp_path / "new" / "sub" / "mlflow.db") == tmp_path  # two folders to make: it starts here
    assert nearest_folder(tmp_path) == tmp_path
    (tmp_path / "new").mkdir()
    assert nearest_folder(tmp_path / "new" / "sub" / "mlflow.db") == tmp_path / "new"


def test_a_folder_that_cannot_be_written_is_refused_before_the_work(tmp_path, monkeypatch):
    """As root every folder is writable: the check is made to fail as it does for a user's read-only mount."""
    assert make_folder(tmp_path / "out" / "x", "export") == tmp_path / "out" / "x"
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if mode == os.W_OK else real_access(path, mode))
    with pytest.raises(AutoqError, match=r"the export folder '.*ro' is not writable; pass a folder you can write to"):
        make_folder(tmp_path / "ro", "export")
