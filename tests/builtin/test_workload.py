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


def test_a_cache_folder_that_cannot_be_made_is_warned_about_as_one_that_cannot_be_written(tmp_path, monkeypatch):
    """A cache folder that could not be made (``HOME=/nonexistent``, a service account's; a read-only disk) stopped every
    command that loads a built-in, ``autoq export`` of a finished search too, while a read-only folder that exists was
    warned about and the work went on. Now both warn, naming the cause (as root, permissions cannot stop the test's own
    mkdir: the error is raised in its place)."""
    from pathlib import Path

    from autoq.builtin.digits import digits_workload
    from autoq.builtin.workload import keep_in_cache
    from autoq.errors import AutoqWarning

    made = Path.mkdir

    def refuse(self, *args, **kwargs):
        if self.is_relative_to(tmp_path / "cache"):
            raise OSError(30, "Read-only file system", str(self))
        return made(self, *args, **kwargs)

    monkeypatch.setenv("AUTOQ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(Path, "mkdir", refuse)
    assert cache_dir() == tmp_path / "cache" and not (tmp_path / "cache").exists()
    with pytest.warns(AutoqWarning, match=r"^the table could not be kept in the cache \(Read-only file system: .*cache/sensitivity\), so it "
                                          r"will be computed again next time; point AUTOQ_CACHE_DIR at a writable folder to keep it$"):
        keep_in_cache(cache_dir() / "sensitivity" / "t.json", lambda p: p.write_text("{}"), "the table", "computed")
    with pytest.warns(AutoqWarning, match=r"the trained digits-cnn could not be kept in the cache \(Read-only file system"):
        workload = digits_workload()
    assert workload.evaluate(workload.model) > 0.95 and not (tmp_path / "cache").exists()
