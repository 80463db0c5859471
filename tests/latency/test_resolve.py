"""How ``--device`` is read: a latency table file, or a device's name (`autoq.latency.resolve`)."""

from __future__ import annotations

from autoq.latency.resolve import is_table_path, portable_device


def test_a_json_name_or_an_existing_file_is_a_table_and_anything_else_a_device(tmp_path, monkeypatch):
    """A missing 'x.json' is still a table (its error says the file is missing, not 'unknown device'); a table saved
    without the suffix is a table when it exists; a device's name is neither."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "measured").write_text("{}")
    assert is_table_path("missing.json") and is_table_path("TABLE.JSON") and is_table_path("measured")
    assert not is_table_path("h200") and not is_table_path("roofline:h100")
    assert portable_device("measured") == str(tmp_path / "measured") and portable_device("h200") == "h200"
    assert portable_device(None) is None


def test_a_file_named_like_a_preset_does_not_take_the_presets_name(tmp_path, monkeypatch):
    """A text file 'h100' in the working folder made '--device h100' fail as 'latency table h100 is not valid JSON'."""
    from autoq.latency import latency_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "h100").write_text("notes")
    assert not is_table_path("h100") and not is_table_path("H100") and is_table_path("./h100")
    assert latency_model("h100", 1).source == "estimate:roofline:h100"  # the preset (no table is committed for it)

