"""`SensitivityTable`: lookups, CSV/JSON round trips, the heat map, refusing another model's table."""

from __future__ import annotations

import math

import matplotlib
import pytest

from autoq.errors import AutoqError
from autoq.sensitivity import Entry, SensitivityTable


def table(model_hash: str = "abc123") -> SensitivityTable:
    entries = (
        Entry("enc.0.q", "int2-ch-asym:rtn-mse", 0.5, 0.01),
        Entry("enc.0.q", "int4-g128-asym:rtn-mse", 0.0123456789012345, None),
        Entry("enc.0.q", "fp16", 1e-12, 0.0),
        Entry("enc,1 \"odd\"", "int2-ch-asym:rtn-mse", 2.5, None),
    )
    return SensitivityTable("hessian", model_hash, "data42", entries, 12.5, "tiny", (("tol", "0.05"),), (("enc.0.q", (("trace", 3.0), ("trace_stderr", 0.1))),))


def test_lookups_and_missing_entries():
    t = table()
    assert t.layers == ["enc.0.q", "enc,1 \"odd\""]
    assert t.options[:2] == ["int2-ch-asym:rtn-mse", "int4-g128-asym:rtn-mse"]
    assert t.score("enc.0.q", "fp16") == 1e-12
    assert t.stats("enc.0.q") == {"trace": 3.0, "trace_stderr": 0.1}
    with pytest.raises(AutoqError, match=r"no score for layer 'enc.0.q' at 'int8-ch-asym:rtn-mse'; recompute it .*--space and --skip\)"):
        t.score("enc.0.q", "int8-ch-asym:rtn-mse")
    with pytest.raises(AutoqError, match=r"it has no layer 'head' at all: computed with --skip\?"):  # it blamed the space alone
        t.score("head", "fp16")


def test_the_repr_is_short_whatever_the_table_holds():
    """The dataclass's repr printed every entry: 64 kB for MiniLM's table in a notebook cell."""
    big = SensitivityTable("kl", "h", "d", tuple(Entry(f"layer.{i}", f"int{b}-ch-asym:rtn-mse", 1.0) for i in range(300) for b in (2, 4, 8)),
                           3.0, "big")
    assert repr(big) == "SensitivityTable(metric='kl', model='big', layers=300, options=3, entries=900, seconds=3, from_cache=False)"
    assert "model='tiny'" in repr(table())
    assert "model='h'" in repr(SensitivityTable("kl", "h", "d", (Entry("a", "fp16", 1.0),), 1.0))  # no name: the weights' hash


def test_duplicate_entries_are_refused():
    with pytest.raises(AutoqError, match="twice"):
        SensitivityTable("kl", "h", "d", (Entry("a", "fp16", 1.0), Entry("a", "fp16", 2.0)), 1.0)


def test_json_round_trip_keeps_everything(tmp_path):
    t = table()
    back = SensitivityTable.load(t.save(tmp_path / "t.json"))
    assert back == t
    assert back.stats("enc.0.q") == t.stats("enc.0.q")


def test_csv_round_trip_keeps_everything(tmp_path):
    t = table()
    back = SensitivityTable.load(t.save(tmp_path / "t.csv"))
    assert back == t  # the per-layer statistics (a Hessian's trace and its standard error) too
    assert back.stats("enc.0.q") == {"trace": 3.0, "trace_stderr": 0.1}


def test_the_csv_reads_into_pandas_as_the_readme_says(tmp_path):
    """pd.read_csv failed on the metadata lines ('Expected 1 fields in line 8, saw 5'), and layers named 0, 2, ... came
    back as numbers."""
    import pandas as pd

    t = SensitivityTable("kl", "h", "d", (Entry("0", "int4-ch-asym:rtn-mse", 0.25, 0.01), Entry("2", "int4-ch-asym:rtn-mse", 0.5, None)), 1.0)
    frame = pd.read_csv(t.save(tmp_path / "t.csv"), comment="#", dtype={"layer": str})
    assert list(frame.columns) == ["layer", "option", "score", "stderr"]
    assert [t.score(layer, option) for layer, option in zip(frame.layer, frame.option)] == frame.score.tolist() == [0.25, 0.5]


def test_heatmap_is_a_png_and_leaves_the_callers_backend(tmp_path):
    previous = matplotlib.get_backend()
    matplotlib.use("svg")  # as a notebook would have its own
    try:
        path = table().heatmap(tmp_path / "t.png")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(previous)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_table_from_another_model_is_refused():
    t = table("abc123")
    t.check_model("abc123")
    with pytest.raises(AutoqError, match="computed for model abc123 .*not for this model fff999"):
        t.check_model("fff999", "other")


def test_not_a_table(tmp_path):
    (tmp_path / "x.json").write_text('{"format": "autoq.assignment"}')
    with pytest.raises(AutoqError, match="not an autoq sensitivity table"):
        SensitivityTable.load(tmp_path / "x.json")
    with pytest.raises(AutoqError, match="does not exist"):
        SensitivityTable.load(tmp_path / "missing.json")


def _edited_json(tmp_path, edit) -> str:
    import json

    data = json.loads(table().to_json())
    edit(data)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.pop("entries"), "no 'entries' list"),
    (lambda d: d.pop("metric"), "no 'metric'"),
    (lambda d: d.pop("seconds"), "no 'seconds'"),
    (lambda d: d.update(seconds="soon"), "metadata cannot be read"),
    (lambda d: d.update(params=[1]), "metadata cannot be read"),
    (lambda d: d["entries"][1].pop(), r"entry 2 of the sensitivity table, \['enc.0.q', 'int4-g128-asym:rtn-mse', 0.0123"),
    (lambda d: d["entries"][0].__setitem__(2, "abc"), "entry 1 .* is not \\[layer, option, score, stderr\\]"),
    (lambda d: d["entries"][0].__setitem__(2, None), "entry 1 .* is not \\[layer, option, score, stderr\\]"),
    (lambda d: d["entries"][2].__setitem__(2, float("nan")), r"entry 3 .*\(enc.0.q, fp16\) has score nan .*a score is a finite number"),
    (lambda d: d["entries"][2].__setitem__(2, float("inf")), "entry 3 .* has score inf"),
    (lambda d: d["entries"][0].__setitem__(3, -1.0), "entry 1 .* stderr -1.0"),
])
def test_a_damaged_json_table_names_the_file_and_what_is_wrong(tmp_path, edit, message):
    """Every damage a hand edit or a cut gives is an `AutoqError` (the CLI prints it in one line; the cache computes the
    table again): a NaN score reached the ILP seeding, which failed in scipy, the others were KeyError or TypeError."""
    path = _edited_json(tmp_path, edit)
    with pytest.raises(AutoqError, match=f"^{path}: .*{message}"):
        SensitivityTable.load(path)


def test_an_infinite_or_unknown_stderr_is_kept(tmp_path):
    """A gradient metric's stderr from one sample is inf, and inf times a zero change is nan: tables autoq writes load."""
    path = _edited_json(tmp_path, lambda d: (d["entries"][0].__setitem__(3, float("inf")), d["entries"][1].__setitem__(3, float("nan"))))
    loaded = SensitivityTable.load(path)
    assert loaded.entry("enc.0.q", "int2-ch-asym:rtn-mse").stderr == float("inf")
    assert math.isnan(loaded.entry("enc.0.q", "int4-g128-asym:rtn-mse").stderr)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda text: text.replace(",stderr\n", "\n", 1), "no column 'stderr': its header is 'layer,option,score', where autoq writes "
                                                     "'layer,option,score,stderr'"),
    (lambda text: text.replace("# seconds: 12.5", "# seconds: twelve"), "line .*'# seconds: ...', does not hold a JSON value"),
    (lambda text: text.replace("0.5,0.01", "nan,0.01"), r"entry 1 .* has score nan"),
    (lambda text: text.replace("0.5,0.01", "half,0.01"), "entry 1 .* is not \\[layer, option, score, stderr\\]"),
])
def test_a_damaged_csv_table_names_the_file_and_what_is_wrong(tmp_path, edit, message):
    path = tmp_path / "t.csv"
    path.write_text(edit(table().to_csv()))
    with pytest.raises(AutoqError, match=f"^{path}: .*{message}"):
        SensitivityTable.load(path)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda text: text[:-4], r"last row \(row 4 of its 4\) has no line ending, so it may be cut short"),  # a score read as another number
    (lambda text: text[:text.rindex("\nenc.0.q,fp16") + 9], r"cut short: it holds 3 of its 4 rows, the last one unfinished"),
    (lambda text: text[:text.rindex('\n"enc,1') + 1], r"cut short: it holds 3 of its 4 rows; compute it again \(autoq sensitivity\), "
                                                      r"or, if you edited its rows by hand, make its '# entries:' line say how many"),
])
def test_a_csv_table_cut_short_is_refused_as_such(tmp_path, edit, message):
    """A CSV records no end: cut in its last score it loaded with another score; cut between rows it was said to be of
    another search space."""
    path = tmp_path / "t.csv"
    path.write_text(edit(table().to_csv()))
    with pytest.raises(AutoqError, match=f"^{path}: .*{message}"):
        SensitivityTable.load(path)
    older = "".join(line for line in table().to_csv().splitlines(keepends=True) if not line.startswith("# entries: "))
    path.write_text(older)  # written before the count: loads as it did
    assert SensitivityTable.load(path) == table()


def test_a_whole_csv_table_without_its_last_newline_says_to_add_one(tmp_path):
    """An editor that drops the final newline made the table 'cut short: it holds 4 of its 4 rows', whose fix (make the
    count say 4) was already so; the message now says what is missing, and adding it loads the table."""
    path = tmp_path / "t.csv"
    path.write_text(table().to_csv().removesuffix("\n"))
    with pytest.raises(AutoqError, match=r"last row \(row 4 of its 4\) has no line ending.* that row is whole, end the file with a newline$"):
        SensitivityTable.load(path)
    path.write_text(path.read_text() + "\n")
    assert SensitivityTable.load(path) == table()


def test_a_table_that_is_not_text_is_refused(tmp_path):
    path = tmp_path / "t.json"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(AutoqError, match="is not UTF-8 text"):
        SensitivityTable.load(path)


def test_a_hand_edited_csv_with_spaces_after_its_commas_loads(tmp_path):
    """'layer, option, score, stderr' was refused as having no column 'option', naming autoq's header as the file's."""
    path = tmp_path / "t.csv"
    path.write_text(table().to_csv().replace("layer,option,score,stderr", "layer, option, score, stderr").replace(",0.01\n", ", 0.01\n"))
    assert SensitivityTable.load(path) == table()


def test_the_heat_map_draws_a_zero_score_apart_from_a_missing_one_and_fp16_last():
    """A score of 0 (an unused layer's) was drawn blank, as a (layer, option) with no score is; fp16 stood wherever the
    first layer's options put it."""
    import dataclasses

    t = dataclasses.replace(table(), entries=(*table().entries[:2], Entry("enc.0.q", "fp16", 0.0, None), table().entries[3]))
    options, grid, (low, high) = t.heat_grid()
    assert options == ["int2-ch-asym:rtn-mse", "int4-g128-asym:rtn-mse", "fp16"]
    assert grid[0, 2] < low <= high  # below the colour range: the colour map's 'under' colour, not blank
    assert math.isnan(grid[1, 1]) and math.isnan(grid[1, 2])  # not scored: blank
    assert grid[0, 0] == pytest.approx(math.log10(0.5)) and (low, high) == pytest.approx((math.log10(0.0123456789012345), math.log10(2.5)))


def test_a_table_with_an_infinite_stderr_is_strict_json_and_csv(tmp_path):
    """One iteration's stderr (inf) and a statistic of it were written as 'Infinity', which strict JSON readers (jq, a
    browser) refuse; they are written as unknown (null, an empty cell) and left out of the statistics."""
    import dataclasses
    import json

    t = dataclasses.replace(table(), entries=(Entry("enc.0.q", "fp16", 1e-12, float("inf")), Entry("enc.0.q", "int2-ch-asym:rtn-mse", 0.5, float("nan"))),
                            layer_stats=(("enc.0.q", (("trace", 3.0), ("trace_stderr", float("inf")))),))

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    data = json.loads(t.to_json(), parse_constant=refuse)
    assert [row[3] for row in data["entries"]] == [None, None] and data["layer_stats"] == {"enc.0.q": {"trace": 3.0}}
    csv_text = t.to_csv()
    assert "Infinity" not in csv_text and "enc.0.q,fp16,1e-12,\n" in csv_text
    for path in (t.save(tmp_path / "t.json"), t.save(tmp_path / "t.csv")):
        assert SensitivityTable.load(path).entry("enc.0.q", "fp16").stderr is None


def test_the_heat_maps_colour_range_is_not_empty_when_every_score_is_alike():
    """The colour range is ``(low, high)`` of the log scores, widened to ``(low, low + 1)`` where they are all one value:
    an empty range (vmin == vmax) has no colour for any score."""
    t = SensitivityTable("kl", "h", "d", (Entry("a", "int4", 0.5), Entry("b", "int4", 0.5)), 1.0)
    _, grid, (low, high) = t.heat_grid()
    assert low < high and (low, high) == pytest.approx((math.log10(0.5), math.log10(0.5) + 1.0))
    assert low <= grid[0, 0] <= high


def test_a_json_table_of_another_version_is_refused_naming_both_versions(tmp_path):
    """`_check_meta` refuses a table whose 'version' is not the one autoq writes, saying which it found and which it
    expects: a later format read as this one would seed the search with misread scores."""
    path = _edited_json(tmp_path, lambda d: d.update(version=2))
    with pytest.raises(AutoqError, match=r"sensitivity table version 2 is not supported \(expected 1\)"):
        SensitivityTable.load(path)


def test_the_scores_digest_tells_tables_of_two_models_apart():
    """`scores_digest` digests the metric, the model hash and every score: a resume checks its table is still the one it
    was seeded from, and the same scores computed for other weights are not that table."""
    assert table("abc123").scores_digest() == table("abc123").scores_digest()
    assert table("abc123").scores_digest() != table("fff999").scores_digest()


def test_save_chooses_csv_by_the_extension_whatever_its_case(tmp_path):
    """`save` writes CSV for a '.csv' extension in any case (T.CSV too), as `load` reads it: JSON written to T.CSV was
    refused by `load` as a CSV without its metadata."""
    t = table()
    path = t.save(tmp_path / "T.CSV")
    assert path.read_text().startswith("# format: ")
    assert SensitivityTable.load(path) == t


def test_a_layer_named_with_a_leading_hash_round_trips_through_csv(tmp_path):
    """Only '# key: value' lines are the CSV's metadata: a row of a layer whose name starts with '#' (an nn.ModuleDict key
    may) is a row, not a comment."""
    t = SensitivityTable("kl", "h", "d", (Entry("#head", "int4", 0.5), Entry("body", "int4", 0.25)), 1.0)
    assert SensitivityTable.load(t.save(tmp_path / "t.csv")) == t
