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



def test_a_folder_or_a_roofline_of_a_table_is_refused_as_such(tmp_path, monkeypatch):
    """A folder was 'a table that does not exist' (dir.json) or 'an unknown device' (./d); roofline:h200.json a missing
    table, though roofline: takes a preset's name."""
    import pytest

    from autoq.errors import AutoqError
    from autoq.latency import latency_model

    monkeypatch.chdir(tmp_path)
    for name in ("dir.json", "d"):
        (tmp_path / name).mkdir()
        with pytest.raises(AutoqError, match=rf"^latency table '\./{name}' is a folder; pass the latency table JSON file in it"):
            latency_model(f"./{name}")
    with pytest.raises(AutoqError, match=r"^latency table 'dir.json' is a folder"):
        latency_model("dir.json")
    with pytest.raises(AutoqError, match=r"^--device 'roofline:h200.json': roofline: takes a preset's name \(.*\), not 'h200.json'; "
                                         r"a measured table's path goes without the prefix \(--device h200.json\)"):
        latency_model("roofline:h200.json")
    with pytest.raises(AutoqError, match=r"roofline: takes a preset's name .*, not ''; .*\(--device TABLE.json\)"):
        latency_model("roofline:")
    with pytest.raises(AutoqError, match=r"not 'cuda'; .*\(--device TABLE.json\)"):  # it offered '--device cuda', refused too
        latency_model("roofline:cuda")
    # 'cuda' asks where to run: said to be what it is not, or the error's presets ran on the CPU, priced as a GPU unsaid
    for where in ("cuda", "CUDA:0", "gpu", " cuda "):
        with pytest.raises(AutoqError, match=r"--device names the GPU whose kernel latency the search prices, not where it runs"):
            latency_model(where)
    with pytest.raises(AutoqError, match=r"^unknown device 'tpu-v9'; use a preset"):
        latency_model("tpu-v9")
    assert latency_model("ROOFLINE:H200").source == "estimate:roofline:h200"
    (tmp_path / "h200").mkdir()  # a folder named as a preset does not take the preset's name, as a file does not
    assert latency_model("h200").source.startswith("table:NVIDIA H200") and not is_table_path("h200")
