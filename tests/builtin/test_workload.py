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


@pytest.mark.parametrize("xdg", ["", "relative/cache"])
def test_an_empty_or_relative_xdg_cache_home_is_ignored_as_the_spec_says(xdg, tmp_path, monkeypatch):
    """XDG_CACHE_HOME= put the cache in ./autoq, a new one (a model retrained) in every folder a search ran from."""
    monkeypatch.delenv("AUTOQ_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", xdg)
    monkeypatch.chdir(tmp_path)
    assert cache_dir() == tmp_path / "home" / ".cache" / "autoq"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # an absolute one is taken
    assert cache_dir() == tmp_path / "xdg" / "autoq"


def test_a_cache_folder_that_cannot_be_made_is_refused_by_name(tmp_path, monkeypatch):
    """A read-only disk said "Read-only file system: PATH", naming no setting (as root, permissions cannot stop the
    test's own mkdir: the error is raised in its place)."""
    from pathlib import Path

    def refuse(self, *args, **kwargs):
        raise OSError(30, "Read-only file system", str(self))

    monkeypatch.setenv("AUTOQ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(AutoqError, match=r"^\$AUTOQ_CACHE_DIR \(.*cache\) cannot be made \(Read-only file system\); .*point "
                                         r"AUTOQ_CACHE_DIR at a writable folder$"):
        cache_dir()
