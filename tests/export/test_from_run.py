"""``autoq.export.from_run``: which model a run's point is exported from when none is passed."""

from __future__ import annotations

import pytest

from autoq.choice import Assignment
from autoq.errors import AutoqError
from autoq.export.from_run import RunPoint, model_of


def point(source: str, name: str = "m") -> RunPoint:
    return RunPoint(Assignment({}), "trial 3 (run abc)", model_name=name, model_source=source)


def test_a_builtin_or_an_existing_folder_is_the_model(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert model_of(point("digits-cnn")) == "digits-cnn"
    assert model_of(point(str(tmp_path))) == str(tmp_path)


def test_a_searched_folder_moved_since_says_to_pass_where_it_is_now(tmp_path):
    """It went on to load_workload, whose 'does not exist; pass a local Hugging Face model directory' named no option
    of the export."""
    gone = tmp_path / "moved-away"
    with pytest.raises(AutoqError, match=r"moved-away, which has no config\.json now .*--model DIR, or autoq\.export\(DIR"):
        model_of(point(str(gone)))
    gone.mkdir()  # a folder, but no model in it
    with pytest.raises(AutoqError, match="has no config.json now"):
        model_of(point(str(gone)))


def test_a_module_search_needs_its_model_passed():
    with pytest.raises(AutoqError, match="searched 'Net' given as a module"):
        model_of(point("", "Net"))
