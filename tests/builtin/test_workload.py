"""`autoq.builtin.workload`: where built-ins and sensitivity tables are cached."""

from __future__ import annotations

import pytest

from autoq.builtin.workload import cache_dir
from autoq.errors import AutoqError


def test_the_cache_folder_follows_autoq_cache_dir_and_a_file_there_is_refused_by_name(tmp_path, monkeypatch):
    """$AUTOQ_CACHE_DIR naming a file failed with "File exists: PATH", naming no setting."""
    monkeypatch.setenv("AUTOQ_CACHE_DIR", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache" and (tmp_path / "cache").is_dir()
    (tmp_path / "afile").write_text("")
    for under in ("afile", "afile/cache"):
        monkeypatch.setenv("AUTOQ_CACHE_DIR", str(tmp_path / under))
        with pytest.raises(AutoqError, match=r"^\$AUTOQ_CACHE_DIR \(.*\) is, or lies under, a file; .*point AUTOQ_CACHE_DIR at a folder$"):
            cache_dir()
