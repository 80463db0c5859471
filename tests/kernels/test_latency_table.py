"""LatencyTable (autoq.kernels.table): JSON round trip, lookups, and clear errors for bad files."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from autoq.errors import AutoqError
from autoq.kernels.bench import speedups
from autoq.kernels.table import INT8_TOKENS, LatencyRow, LatencyTable


def row(fmt: str, kernel: str, us: float, n: int = 384, k: int = 1536, batch: int = 1, activation: str = "fp16") -> LatencyRow:
    return LatencyRow(n, k, fmt, kernel, batch, us, us * 0.9, us * 1.1, 100.0 / us, activation)


@pytest.fixture
def table() -> LatencyTable:
    rows = (row("fp16", "torch-fp16", 10.0), row("int4-g128-asym", "wq", 4.0), row("int4-g128-asym", "wq-gemv", 3.0),
            row("int8-ch-sym", "wq", 6.0), row("int8-ch-sym", "w8a8", 5.0, activation=INT8_TOKENS),
            row("int4-g128-asym", "wq", 9.0, batch=16), row("int4-g128-asym", "wq", 20.0, n=1536, k=384))
    return LatencyTable("NVIDIA H100 80GB HBM3", rows, "2.13.0", "3.9.0", "12.8", "2026-11-25T14:00:00Z", 3352.3)


def test_round_trip_through_json(table: LatencyTable, tmp_path):
    path = table.save(tmp_path / "sub" / "table.json")
    loaded = LatencyTable.load(path)
    assert loaded == table and path.read_text().endswith("}\n")  # a text file: its last line ends
    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["device"] == table.device and len(data["rows"]) == len(table.rows)
    assert set(data["rows"][0]) == {"n", "k", "format", "kernel", "batch", "median_us", "p20_us", "p80_us", "gbps", "activation"}


def test_rows_keep_the_tiles_their_autotuners_chose(table: LatencyTable, tmp_path):
    """A timed row may say which tile each Triton kernel ran with and how every candidate did; tables without them load."""
    tuned = LatencyRow(4096, 4096, "int4-ch-asym", "wq", 1, 3.2, 3.1, 3.3, 2600.0, tiles=("wq_gemv_kernel 32x1024 w4 s2",),
                       tile_timings_us=(("wq_gemv_kernel 32x1024 w4 s2", 3.25), ("wq_gemv_kernel 16x1024 w4 s2", 3.5)))
    both = LatencyTable(table.device, (*table.rows, tuned))
    data = json.loads(both.save(tmp_path / "t.json").read_text())
    assert data["rows"][-1]["tiles"] == ["wq_gemv_kernel 32x1024 w4 s2"]
    assert data["rows"][-1]["tile_timings_us"] == {"wq_gemv_kernel 32x1024 w4 s2": 3.25, "wq_gemv_kernel 16x1024 w4 s2": 3.5}
    assert "tiles" not in data["rows"][0] and "tile_timings_us" not in data["rows"][0]
    assert LatencyTable.load(tmp_path / "t.json").rows[-1] == tuned
    (s,) = [r for r in speedups(both) if r["n"] == 4096]
    assert s["tile"] == "wq_gemv_kernel 32x1024 w4 s2"


def test_lookup_picks_the_fastest_weight_only_kernel(table: LatencyTable):
    assert table.lookup(384, 1536, "int4-g128-asym", 1).kernel == "wq-gemv"
    assert table.lookup(384, 1536, "int4-g128-asym", 1, kernel="wq").median_us == 4.0
    assert table.lookup(384, 1536, "int8-ch-sym", 1).kernel == "wq"  # W8A8 quantizes activations: asked for separately
    assert table.lookup(384, 1536, "int8-ch-sym", 1, activation=INT8_TOKENS).kernel == "w8a8"
    assert table.lookup(384, 1536, "int4-g128-asym", 128) is None
    assert table.lookup(4096, 4096, "fp16", 1) is None


def test_select_and_summaries(table: LatencyTable):
    picked = table.select(fmt="int4-g128-asym", batch=1)
    assert sorted((r.n, r.k, r.median_us) for r in picked) == [(384, 1536, 3.0), (1536, 384, 20.0)]
    assert all(r.activation == "fp16" for r in table.select())
    assert table.formats == ("fp16", "int4-g128-asym", "int8-ch-sym")
    assert table.shapes == ((384, 1536), (1536, 384))
    assert table.batches == (1, 16)


def test_merged_replaces_only_remeasured_rows(table: LatencyTable):
    merged = table.merged([row("int4-g128-asym", "wq", 2.5), row("int2-ch-asym", "wq", 1.0)])
    assert merged.lookup(384, 1536, "int4-g128-asym", 1, kernel="wq").median_us == 2.5
    assert merged.lookup(384, 1536, "int4-g128-asym", 1).median_us == 2.5
    assert merged.lookup(384, 1536, "int2-ch-asym", 1) is not None
    assert len(merged.rows) == len(table.rows) + 1
    # the rows kept in their order, then the new ones (a committed table's diff shows what was measured again)
    assert merged.rows == tuple(r for r in table.rows if (r.format, r.kernel, r.n, r.k, r.batch) != ("int4-g128-asym", "wq", 384, 1536, 1)) + (
        row("int4-g128-asym", "wq", 2.5), row("int2-ch-asym", "wq", 1.0))


def test_a_table_says_how_it_was_timed_and_older_ones_were_flushed(table: LatencyTable, tmp_path):
    rotated = replace(table, timing="rotate")
    assert LatencyTable.load(rotated.save(tmp_path / "r.json")).timing == "rotate"
    assert rotated.merged([row("int2-ch-asym", "wq", 1.0)]).timing == "rotate"
    data = table.to_dict()
    assert data["timing"] == "flush"
    del data["timing"]  # written before tables said
    assert LatencyTable.from_dict(data).timing == "flush"
    with pytest.raises(AutoqError, match="timing 'cold' is unknown.*flush, rotate"):
        LatencyTable.from_dict({**data, "timing": "cold"}, source="t.json")
    with pytest.raises(AutoqError, match="timing 'cold' is unknown"):
        replace(table, timing="cold")
    with pytest.raises(AutoqError, match=r"timing \['flush'\] is unknown"):  # was a TypeError (unhashable)
        LatencyTable.from_dict({**data, "timing": ["flush"]}, source="t.json")


def test_updating_keeps_old_rows_of_the_same_device_and_timing_only(table: LatencyTable):
    new = LatencyTable(table.device, (row("int4-g128-asym", "wq", 2.5),), "2.13.0", "3.9.0", "12.8", created="2026-12-01T00:00:00Z")
    updated = new.updating(table)
    assert len(updated.rows) == len(table.rows)
    assert updated.lookup(384, 1536, "int4-g128-asym", 1, kernel="wq").median_us == 2.5
    assert updated.created == "2026-12-01T00:00:00Z"  # the new measurement's date
    # other versions: the old rows were written out under the new run's (Triton 3.6's timings labelled 3.9)
    for field, version in (("torch", "2.14.0"), ("triton", "3.6.0"), ("cuda", "13.0")):
        with pytest.raises(AutoqError, match=rf"old.json was measured with {field} .*, and this run has {version}: .*leave out --merge"):
            replace(new, **{field: version}).updating(table, source="old.json")
    assert replace(new, cuda="").updating(table).rows == updated.rows  # a version the new table does not record is no conflict
    with pytest.raises(AutoqError, match="timing 'flush', not this run's 'rotate'.*same timing"):
        replace(new, timing="rotate").updating(table, source="old.json")
    with pytest.raises(AutoqError, match="old.json was measured with device 'NVIDIA H100 80GB HBM3', not this run's 'NVIDIA H200'"):
        replace(new, device="NVIDIA H200").updating(table, source="old.json")


def test_rows_that_contradict_the_table_are_refused_naming_them(table: LatencyTable):
    """A second row of one kernel at one key (the smaller was taken, unsaid), W8A8 rows of a format the W8A8 kernel does not
    read (they joined the int8 series and halved its time), and a median outside its own spread all loaded."""
    data = table.to_dict()
    with pytest.raises(AutoqError, match=r"t.json: rows 1 and 7 both measure kernel 'wq' on int4-g128-asym 384x1536 at batch 1; keep one"):
        LatencyTable.from_dict({**data, "rows": [*data["rows"], dict(data["rows"][1], median_us=0.5, p20_us=0.4, p80_us=0.6)]}, "t.json")
    w8a8_int2 = row("int2-ch-asym", "w8a8", 2.0, activation=INT8_TOKENS).to_dict()
    with pytest.raises(AutoqError, match=r"row 7 times the W8A8 kernel \(int8-token activations\) on int2-ch-asym, which it does not read"):
        LatencyTable.from_dict({**data, "rows": [*data["rows"], w8a8_int2]}, "t.json")
    with pytest.raises(AutoqError, match=r"row 0 \(fp16 384x1536\) has median 10.0 us outside its 20th-80th percentiles 11.0-12.0 us"):
        LatencyTable.from_dict({**data, "rows": [dict(data["rows"][0], p20_us=11.0, p80_us=12.0), *data["rows"][1:]]}, "t.json")
    with pytest.raises(AutoqError, match=r"row 0 \(fp16 384x1536\) has median 10.0 us outside its 20th-80th percentiles 8.0-9.0 us"):
        LatencyTable.from_dict({**data, "rows": [dict(data["rows"][0], p20_us=8.0, p80_us=9.0), *data["rows"][1:]]}, "t.json")
    assert LatencyTable.from_dict(data, "t.json") == table


def test_the_cost_model_prices_a_layer_by_the_kernel_an_export_runs(table: LatencyTable):
    """wq-gemv at 3.0 us beside wq at 4.0: the cost model took 3.0, and an exported model's layers always call wq."""
    from autoq.latency.resolve import _table_latency
    from autoq.quant import QuantSpec

    spec = QuantSpec.from_name("int4-g128-asym")
    assert table.lookup(384, 1536, spec.name, 1).kernel == "wq-gemv"  # the fastest measured, for the speed-up tables
    assert _table_latency(table, 1, "t.json").layer_us(384, 1536, spec) == 4.0
    only_gemv = replace(table, rows=tuple(r for r in table.rows if r.kernel != "wq" or r.format != spec.name or r.batch != 1))
    assert _table_latency(only_gemv, 1, "t.json").layer_us(384, 1536, spec) == 3.0  # the export's kernel unmeasured: what was


def test_rows_without_activation_default_to_weight_only(table: LatencyTable):
    data = table.to_dict()
    for r in data["rows"]:
        del r["activation"]
    assert all(r.activation == "fp16" for r in LatencyTable.from_dict(data).rows)


@pytest.mark.parametrize("content,match", [
    ("{not json", "not valid JSON"),
    (json.dumps({"version": 2, "device": "x", "rows": []}), "version"),
    (json.dumps({"version": 1, "rows": []}), "device"),
    (json.dumps({"version": 1, "device": "x", "rows": [{"n": 1, "k": 2}]}), "lacks format"),
])
def test_bad_files_are_autoq_errors(tmp_path, content, match):
    path = tmp_path / "t.json"
    path.write_text(content)
    with pytest.raises(AutoqError, match=match):
        LatencyTable.load(path)


def test_a_table_that_is_not_text_is_refused(tmp_path):
    path = tmp_path / "t.json"
    path.write_bytes(b'{"device": "\xff\xfe"}')
    with pytest.raises(AutoqError, match="is not UTF-8 text; 'autoq kernels bench' writes JSON"):
        LatencyTable.load(path)


@pytest.mark.parametrize("change,match", [
    ({"median_us": None}, r"row 0 \(fp16 384x1536\) is malformed"),
    ({"median_us": "fast"}, "is malformed"),
    ({"tile_timings_us": [1, 2]}, "is malformed"),
    ({"format": "int7-g100-asym"}, r"row 0 \(int7-g100-asym 384x1536\) is malformed: .*bit"),
    ({"median_us": float("inf")}, "must be positive and finite"),
    ({"p20_us": 0.0}, "must be positive and finite"),
    ({"n": 0}, "each must be at least 1"),
    # were read silently: 384.7 as 384, true as batch 1, a row of another activation dropped, and int16-tensor-sym
    # (fp16 under another name) ended the search in a KeyError
    ({"n": 384.7}, r"row 0 has n=384.7; n, k and batch are integers"),
    ({"batch": True}, r"row 0 has batch=True"),
    ({"k": "1536"}, r"row 0 has k='1536'"),
    ({"activation": "bogus"}, r"row 0 has activation 'bogus'; a row's activation is fp16 or int8-token"),
    ({"format": "int16-tensor-sym"}, r"is malformed: 'int16-tensor-sym' is no integer format: choose int2 to int8"),
    ({"format": "int4-g0128-asym"}, r"is malformed: cannot parse quantization format 'int4-g0128-asym'"),  # another spelling
])
def test_a_malformed_row_is_an_error_naming_it(table: LatencyTable, change, match):
    data = table.to_dict()
    data["rows"][0].update(change)
    with pytest.raises(AutoqError, match=match):
        LatencyTable.from_dict(json.loads(json.dumps(data)))  # as read from a file (inf is JSON's Infinity)
    with pytest.raises(AutoqError, match="peak_bandwidth_gbs 'fast' is not a number"):
        LatencyTable.from_dict({**table.to_dict(), "peak_bandwidth_gbs": "fast"})
    with pytest.raises(AutoqError, match="needs a 'device' string"):
        LatencyTable.from_dict({**table.to_dict(), "device": " "})


def test_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(AutoqError, match="autoq kernels bench"):
        LatencyTable.load(tmp_path / "absent.json")


def test_the_benchmarks_results_file_passed_as_a_table_says_where_its_table_is(tmp_path):
    """The README says the results file holds the table under 'table', so a user passes it to --device: it was refused
    as 'a latency table of version 1, got version None'."""
    from pathlib import Path

    from autoq.latency import latency_model

    results = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "kernels_nvidia-h200.json"
    with pytest.raises(AutoqError, match="is a benchmarks/kernels_llama.py results file, not a latency table: it holds one under its 'table'"):
        latency_model(str(results), 1)
    table = tmp_path / "h200.json"  # what the message says to do works
    table.write_text(json.dumps(json.loads(results.read_text())["table"]))
    assert latency_model(str(table), 1).source.startswith("table:")


def test_a_tie_between_kernels_is_won_by_the_first_measured():
    """Two kernels at the same median: lookup and select keep the row listed first, not the last."""
    tied = LatencyTable("GPU", (row("int4-g128-asym", "wq", 5.0), row("int4-g128-asym", "wq-gemv", 5.0)))
    assert tied.lookup(384, 1536, "int4-g128-asym", 1).kernel == "wq"
    assert [r.kernel for r in tied.select()] == ["wq"]


def test_w8a8_rows_are_priced_by_the_w8a8_kernel_an_export_runs():
    """deployed(int8-token) takes the w8a8 kernel's row even where another int8-token kernel measured faster."""
    fast = LatencyTable("GPU", (row("int8-ch-sym", "w8a8", 9.0, activation=INT8_TOKENS),
                                row("int8-ch-sym", "w8a8-fast", 3.0, activation=INT8_TOKENS)))
    assert [r.kernel for r in fast.deployed(INT8_TOKENS)] == ["w8a8"]
