"""Latency from a measured table: exact rows, interpolation in N*K, format stand-ins, loading.

The tables here are written by the tests with made-up numbers: they test the
lookup rules, they are not measurements of anything.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from autoq.errors import AutoqError
from autoq.kernels.table import LatencyRow, LatencyTable
from autoq.latency import Measurement, TableLatency, get_device, latency_model, load_table, preset_for, roofline_us
from autoq.latency.resolve import TABLES_DIR
from autoq.latency.roofline import gemm_bytes
from autoq.quant import QuantSpec

INT4 = QuantSpec.from_name("int4-g128-asym")
INT5 = QuantSpec.from_name("int5-g128-asym")


def rows(fmt: str = "int4-g128-asym", batch: int = 1) -> list[Measurement]:
    return [Measurement(100, 100, fmt, batch, 10.0), Measurement(200, 200, fmt, batch, 30.0), Measurement(400, 400, fmt, batch, 110.0)]


def test_exact_row():
    table = TableLatency("Test GPU", rows(), batch=1)
    assert table.layer_us(200, 200, INT4) == 30.0
    assert table.source == "table:Test GPU" and not table.is_estimate


def test_linear_in_work_between_neighbours():
    table = TableLatency("Test GPU", rows(), batch=1)
    # 300x100 = 30,000 lies between 10,000 (10 us) and 40,000 (30 us): 10 + 20 * 20/30
    assert table.layer_us(300, 100, INT4) == pytest.approx(10 + 20 * 20_000 / 30_000)
    # same work as a measured shape but another aspect ratio: that shape's latency
    assert table.layer_us(400, 100, INT4) == pytest.approx(30.0)


def test_below_smallest_is_the_floor_above_largest_scales():
    table = TableLatency("Test GPU", rows(), batch=1)
    assert table.layer_us(10, 10, INT4) == 10.0
    assert table.layer_us(800, 400, INT4) == pytest.approx(110.0 * 2)


def test_beyond_every_range_the_format_measured_nearest_is_extrapolated_not_a_far_one():
    """int5 measured only at small shapes was stretched in N*K up to a 70x larger layer (10-25x fp16 on an H200 at
    LLaMA-13B sizes); g32 measured only at large shapes floored a small layer at the large shape's latency."""
    int4, int5, g32 = QuantSpec.from_name("int4-g128-asym"), QuantSpec.from_name("int5-g128-asym"), QuantSpec.from_name("int4-g32-asym")
    small = [Measurement(100, 100, "int4-g128-asym", 1, 10.0), Measurement(100, 100, "int5-g128-asym", 1, 11.0)]
    large = [Measurement(1000, 1000, "int4-g128-asym", 1, 50.0), Measurement(1000, 1000, "int4-g32-asym", 1, 60.0)]
    table = TableLatency("Test GPU", small + large, batch=1)
    # 4x the largest work: int4's largest scaled by work, times int5's measured 1.1x int4 (not int5's 11 us x 400), or
    # the bytes' ratio, above it: a launch-bound ratio is not carried into memory-bound work below what the bytes say
    ratio = gemm_bytes(2000, 2000, int5, 1) / gemm_bytes(2000, 2000, int4, 1)
    assert ratio > 1.1
    assert table.layer_us(2000, 2000, int5) == pytest.approx(50.0 * 4 * ratio)
    assert table.layer_us(2000, 2000, int4) == pytest.approx(200.0)
    # below every range: int4's floor times g32's measured 1.2x int4 (not g32's own 60 us floor from 1000 x 1000)
    assert table.layer_us(50, 50, g32) == pytest.approx(10.0 * 1.2)
    # inside their own ranges nothing changes
    assert table.layer_us(100, 100, int5) == 11.0 and table.layer_us(1000, 1000, g32) == 60.0


def test_unmeasured_format_scales_from_the_nearest_by_bytes_without_a_preset():
    table = TableLatency("Test GPU", rows("int4-g128-asym") + rows("fp16"), batch=1)
    int3 = QuantSpec.from_name("int3-g128-asym")
    ratio = gemm_bytes(200, 200, int3, 1) / gemm_bytes(200, 200, INT4, 1)  # in the kernels' layout
    assert table.layer_us(200, 200, int3) == pytest.approx(30.0 * ratio)
    assert table.layer_us(200, 200, QuantSpec.half()) == 30.0  # fp16 is its own row, never a stand-in


def test_an_unmeasured_format_borrows_the_measured_one_of_its_own_symmetry():
    """int4-g64 unmeasured, int4-g128 measured both ways (symmetric 10 us, asymmetric 20 us): each int4-g64 borrows the
    g128 of its own symmetry (zero points cost the kernel), not whichever sorts first by name."""
    table = TableLatency("Test GPU", [Measurement(384, 1536, "int4-g128-sym", 1, 10.0), Measurement(384, 1536, "int4-g128-asym", 1, 20.0)], batch=1)
    sym, asym = (table.layer_us(384, 1536, QuantSpec.from_name(f"int4-g64-{kind}")) for kind in ("sym", "asym"))
    assert 10.0 < sym < 11.0 and 20.0 < asym < 22.0  # each scaled from its own by the bytes (g64 stores more scales)


@pytest.mark.parametrize("median", [0.0, -1.0, float("nan")])
def test_a_measurement_that_is_not_positive_is_refused(median):
    """A kernel takes some time: a median of 0, below it or NaN (a failed timing) would price its format at nothing."""
    with pytest.raises(AutoqError, match=rf"latency table 'Test GPU': median_us must be positive, got {median} for int4-g128-asym 384x1536"):
        TableLatency("Test GPU", [Measurement(384, 1536, "int4-g128-asym", 1, median)], batch=1)


def test_unmeasured_format_uses_the_roofline_ratio_of_a_known_device():
    table = TableLatency("NVIDIA H100 80GB HBM3", rows(), batch=1)
    int8 = QuantSpec.from_name("int8-ch-asym")
    h100 = get_device("h100")
    expected = 30.0 * roofline_us(200, 200, int8, 1, h100) / roofline_us(200, 200, INT4, 1, h100)
    assert table.layer_us(200, 200, int8) == pytest.approx(expected)


def test_a_format_measured_elsewhere_borrows_a_format_measured_around_the_shape():
    """int5 measured only at small shapes, int4 over the whole range: at a large shape int5 takes int4's time times
    the two's measured ratio at int5's shapes, not its small shapes' time stretched by N*K (84 us where fp16 took 15
    in the H200 table), nor the roofline's or bytes' ratio (int5 measured 1.7-2.4x int4 on the H200 came out at int4's
    time above its shapes, below its own time at them)."""
    small_int5 = [Measurement(100, 100, "int5-g128-asym", 1, 17.0)]  # 1.7x int4, above the bytes' 1.27-1.31x
    table = TableLatency("Test GPU", rows() + small_int5, batch=1)
    int5 = QuantSpec.from_name("int5-g128-asym")
    assert table.layer_us(400, 400, int5) == pytest.approx(110.0 * 17.0 / 10.0)
    assert table.layer_us(100, 100, int5) == 17.0  # its own row where it was measured
    assert table.layer_us(101, 100, int5) == pytest.approx(table.layer_us(101, 100, INT4) * 1.7)  # just past it: no drop
    far = TableLatency("Test GPU", [Measurement(10, 10, "int5-g128-asym", 1, 9.0), *rows()], batch=1)  # int4 not at 10 x 10
    ratio = gemm_bytes(400, 400, int5, 1) / gemm_bytes(400, 400, INT4, 1)
    assert far.layer_us(400, 400, int5) == pytest.approx(110.0 * ratio)  # nothing measured beside it: the bytes' ratio
    alone = TableLatency("Test GPU", small_int5 + rows("fp16"), batch=1)  # no integer format around 400 x 400: its own range stretches
    assert alone.layer_us(400, 400, int5) == pytest.approx(17.0 * 16)


def test_a_borrowed_ratio_reads_the_shape_nearest_the_layers_aspect_so_one_column_moves_nothing():
    """The ratio at int5's range end averaged its two shapes of equal work (tall 2x faster than wide): a layer one column
    past the range took that mean, 26% off the measured shape's own latency on the H200 table."""
    int5 = QuantSpec.from_name("int5-g128-asym")
    int5_rows = [Measurement(400, 100, "int5-g128-asym", 1, 60.0), Measurement(100, 400, "int5-g128-asym", 1, 120.0)]
    int4_rows = [*rows(), Measurement(100, 400, "int4-g128-asym", 1, 60.0), Measurement(400, 100, "int4-g128-asym", 1, 30.0)]
    table = TableLatency("Test GPU", int4_rows + int5_rows, batch=1)
    for n, k in ((400, 100), (100, 400)):
        measured = table.layer_us(n, k, int5)
        assert table.layer_us(n, k + 1, int5) == pytest.approx(measured, rel=0.02)
        assert table.layer_us(n + 1, k, int5) == pytest.approx(measured, rel=0.02)


def test_shapes_of_equal_work_are_read_by_aspect_so_latency_grows_with_work():
    table = TableLatency("Test GPU", rows() + [Measurement(800, 50, "int4-g128-asym", 1, 50.0)], batch=1)
    assert table.layer_us(200, 200, INT4) == 30.0 and table.layer_us(800, 50, INT4) == 50.0  # measured shapes: their own rows
    assert table.layer_us(201, 200, INT4) > table.layer_us(199, 200, INT4) > 10.0
    assert table.layer_us(400, 100, INT4) == pytest.approx(40.0)  # 4:1, as far from 1:1 as from 16:1: their mean
    # one row or column from a measured shape is within 3% of it, on both sides (the mean of both shapes of a work was
    # every neighbour's: 801 x 50 took 40 us where 800 x 50 took 50)
    for n, k, measured in ((800, 50, 50.0), (200, 200, 30.0)):
        for near in ((n + 1, k), (n - 1, k), (n, k + 1), (n, k - 1)):
            assert table.layer_us(*near, INT4) == pytest.approx(measured, rel=0.03), near


def test_between_shapes_of_equal_work_latency_follows_the_aspect_smoothly():
    """Read at the nearest measured aspect alone, a layer halfway between two (a square one between 384 x 1536 and
    1536 x 384 on the H200 table) moved 38% at one row more (768 x 768: 4.7 us, 769 x 768: 2.9) and 38% the other way at
    one column more."""
    table = TableLatency("Test GPU", rows() + [Measurement(800, 50, "int4-g128-asym", 1, 50.0)], batch=1)
    along = [table.layer_us(n, 40_000 // n, INT4) for n in (200, 250, 320, 400, 500, 800)]  # all of work 40,000
    assert along[0] == 30.0 and along[-1] == 50.0 and all(b > a for a, b in zip(along, along[1:])), along
    halfway = table.layer_us(400, 100, INT4)
    assert halfway == pytest.approx(40.0)
    for near in ((401, 100), (399, 100), (400, 101), (400, 99)):
        assert table.layer_us(*near, INT4) == pytest.approx(halfway, rel=0.03), near


def test_a_w8a8_layer_on_a_table_without_w8a8_rows_is_scaled_from_the_weight_only_kernel():
    """It took the weight-only int8 kernel's time as is: 9.1 us at 4096 x 4096 on the H200, where W8A8 measured 16.5."""
    from autoq.latency.devices import get_device
    from autoq.latency.roofline import roofline_us

    int8 = QuantSpec.from_name("int8-ch-sym")
    h100 = get_device("h100")
    table = TableLatency(h100.name, [Measurement(4096, 4096, "int8-ch-sym", 1, 10.0)], batch=1)
    ratio = roofline_us(4096, 4096, int8, 1, h100, True) / roofline_us(4096, 4096, int8, 1, h100)
    assert ratio > 1.1 and table.layer_us(4096, 4096, int8, int8_activations=True) == pytest.approx(10.0 * ratio)
    assert table.layer_us(4096, 4096, int8) == 10.0
    measured = TableLatency(h100.name, [Measurement(4096, 4096, "int8-ch-sym", 1, 10.0),
                                        Measurement(4096, 4096, "int8-ch-sym", 1, 17.0, "int8-token")], batch=1)
    assert measured.layer_us(4096, 4096, int8, int8_activations=True) == 17.0 and measured.format_note([int8], w8a8=True) == ""


def test_outside_every_range_the_nearest_range_is_judged_by_the_ratio_of_work_on_both_sides() -> None:
    """A layer 4x below int4's only shape and 5x above int8's: int4's own floor (4x is nearer than 5x), not int8's
    time stretched up and scaled by the bytes."""
    table = TableLatency("Test GPU", [Measurement(1000, 1000, "int4-g128-asym", 1, 50.0), Measurement(250, 200, "int8-ch-asym", 1, 5.0)], batch=1)
    assert table.layer_us(500, 500, INT4) == 50.0  # 250,000 weights: 1,000,000 / 4 below int4, 5 x 50,000 above int8


def test_below_a_formats_range_its_measured_ratio_carries_down_as_is() -> None:
    """int5 measured at 1.0x int4 (a launch-bound kernel) only at a larger shape: below it int5 takes int4's time times
    that 1.0, not the bytes' larger ratio (only above a format's range is its ratio raised to the estimate's)."""
    table = TableLatency("Test GPU", rows() + [Measurement(400, 400, "int5-g128-asym", 1, 110.0)], batch=1)
    assert gemm_bytes(200, 200, INT5, 1) / gemm_bytes(200, 200, INT4, 1) > 1.1
    assert table.layer_us(200, 200, INT5) == pytest.approx(30.0)
    assert table.layer_us(100, 100, INT5) == pytest.approx(10.0)


def test_below_a_formats_range_the_ratio_is_read_at_its_smallest_shape() -> None:
    """int5 measured at 1.5x int4 at 200 x 200 and 2x at 400 x 400: a smaller layer takes the ratio nearest it (1.5x),
    not the one at int5's far end."""
    table = TableLatency("Test GPU", rows() + [Measurement(200, 200, "int5-g128-asym", 1, 45.0), Measurement(400, 400, "int5-g128-asym", 1, 220.0)],
                         batch=1)
    assert table.layer_us(100, 100, INT5) == pytest.approx(10.0 * 1.5)


def test_a_ratio_is_measured_only_where_the_table_measured_both_formats() -> None:
    """int5 measured only at 500 x 500, just above int4's largest shape: int5 below it is int4's time scaled by the
    bytes, not by int5 over int4 stretched to a shape int4 was never measured at."""
    table = TableLatency("Test GPU", rows() + [Measurement(500, 500, "int5-g128-asym", 1, 200.0)], batch=1)
    ratio = gemm_bytes(400, 400, INT5, 1) / gemm_bytes(400, 400, INT4, 1)
    assert table.layer_us(400, 400, INT5) == pytest.approx(110.0 * ratio)


def test_missing_fp16_row_is_an_error():
    table = TableLatency("Test GPU", rows(), batch=1)
    with pytest.raises(AutoqError, match="fp16"):
        table.layer_us(100, 100, QuantSpec.half())


def test_unmeasured_batch_is_an_error_listing_the_measured_ones():
    with pytest.raises(AutoqError, match=r"batch 16.*\[1\]"):
        TableLatency("Test GPU", rows(), batch=16)


def write_table(path, device="Test GPU (made-up numbers)"):
    data = [
        LatencyRow(n, k, fmt, kernel, b, us, us * 0.98, us * 1.03, 1.0)
        for (n, k, fmt, kernel, b, us) in [
            (100, 100, "int4-g128-asym", "wq-gemv", 1, 12.0),
            (100, 100, "int4-g128-asym", "wq-gemm", 1, 9.0),  # the faster kernel counts
            (100, 100, "fp16", "torch-fp16", 1, 20.0),
            (100, 100, "fp16", "torch-fp16", 16, 25.0),
        ]
    ]
    return LatencyTable(device, tuple(data), torch="2.13.0").save(path)


def test_load_table_json_uses_the_fastest_kernel(tmp_path):
    path = write_table(tmp_path / "t.json")
    model = latency_model(str(path), batch=1)
    assert isinstance(model, TableLatency)
    assert model.layer_us(100, 100, INT4) == 9.0
    assert model.source == "table:Test GPU (made-up numbers)"
    assert load_table(path, batch=16).layer_us(100, 100, QuantSpec.half()) == 25.0


def test_a_w8a8_layer_takes_the_w8a8_kernels_rows_and_the_roofline_the_int8_peak(tmp_path):
    """The table's W8A8 rows were never read: a layer quantizing its input to int8 was charged the weight-only kernel's
    time (29.2 us at 4096 x 4096, batch 128 on the H200, where the W8A8 kernel measured 18.5 us)."""
    from torch import nn

    from autoq.choice import LayerChoice
    from autoq.cost import CostModel
    from autoq.model import find_layers

    data = [LatencyRow(n, n, "int8-ch-sym", kernel, 128, us, us, us, 1.0, activation=act) for n, kernel, act, us in (
        (100, "wq", "fp16", 30.0), (200, "wq", "fp16", 90.0), (100, "w8a8", "int8-token", 12.0), (200, "w8a8", "int8-token", 40.0))]
    data += [LatencyRow(100, 100, "fp16", "torch-fp16", 128, 20.0, 20.0, 20.0, 1.0), LatencyRow(100, 100, "int8-ch-asym", "wq", 128, 33.0, 33.0, 33.0, 1.0)]
    path = LatencyTable("Test GPU", tuple(data), torch="2.13.0").save(tmp_path / "t.json")
    table = latency_model(str(path), batch=128)
    int8 = QuantSpec.from_name("int8-ch-sym")
    assert (table.layer_us(200, 200, int8), table.layer_us(200, 200, int8, int8_activations=True)) == (90.0, 40.0)
    assert table.layer_us(150, 100, int8, int8_activations=True) == pytest.approx(12.0 + 28.0 * 5_000 / 30_000)
    model = nn.Sequential(nn.Linear(200, 200))
    cost = CostModel.for_model(model, find_layers(model), table)
    layer = cost.layers[0]
    charged = {name: cost.layer_us(layer, LayerChoice.from_name(name)) for name in (
        "int8-ch-sym:rtn-minmax", "int8-ch-sym:rtn-minmax+a8-token", "int8-ch-sym:smoothquant+a8-tensor", "int8-ch-asym:rtn-minmax+a8-token")}
    # an asymmetric int8 weight is not the W8A8 kernel's: the export runs that layer in torch, charged the fp16 matmul
    assert charged == {"int8-ch-sym:rtn-minmax": 90.0, "int8-ch-sym:rtn-minmax+a8-token": 40.0, "int8-ch-sym:smoothquant+a8-tensor": 40.0,
                       "int8-ch-asym:rtn-minmax+a8-token": table.layer_us(200, 200, QuantSpec.half())}
    h100 = get_device("h100")  # compute-bound at a large batch: int8 tensor cores, twice the fp16 peak
    assert roofline_us(8192, 8192, int8, 4096, h100, int8_activations=True) < 0.6 * roofline_us(8192, 8192, int8, 4096, h100)


def test_a_rotate_timed_table_names_its_timing_in_the_source(tmp_path):
    """Latencies timed by two methods must not be compared unawares: the source, which MLflow tags and plots carry, says."""
    path = write_table(tmp_path / "t.json")
    rotated = replace(LatencyTable.load(path), timing="rotate").save(tmp_path / "r.json")
    assert latency_model(str(rotated), batch=1).source == "table:Test GPU (made-up numbers) (rotate timing)"
    assert latency_model(str(path), batch=1).source == "table:Test GPU (made-up numbers)"


def test_missing_table_file_names_bench(tmp_path):
    with pytest.raises(AutoqError, match="autoq kernels bench"):
        latency_model(str(tmp_path / "nope.json"))


def test_a_preset_reads_its_committed_table_at_a_measured_batch_else_the_roofline(tmp_path):
    """``--device h100`` prefers a table measured on an H100 and shipped with autoq; ``roofline:h100`` forces the estimate."""
    write_table(tmp_path / "h100.json", device="NVIDIA H100 80GB HBM3")
    measured = latency_model("H100", batch=1, tables_dir=tmp_path)
    assert isinstance(measured, TableLatency) and measured.source == "table:NVIDIA H100 80GB HBM3"
    assert measured.layer_us(100, 100, INT4) == 9.0
    for device, batch in (("h100", 128), ("roofline:h100", 1), ("a100", 1)):  # batch not measured; forced; no table
        model = latency_model(device, batch=batch, tables_dir=tmp_path)
        assert not isinstance(model, TableLatency) and model.source == f"estimate:roofline:{device.split(':')[-1]}"
    with pytest.raises(AutoqError, match=r"^--device 'roofline:tpu': roofline: takes a preset's name \(h100, .*\), not 'tpu'"):
        latency_model("roofline:tpu", tables_dir=tmp_path)


def test_a_preset_at_an_unmeasured_batch_gets_a_note(tmp_path):
    """The quiet fallback to the roofline carries a note the search prints: which batches the shipped table has, and the nearest."""
    write_table(tmp_path / "h100.json", device="NVIDIA H100 80GB HBM3")
    measured = LatencyTable.load(tmp_path / "h100.json").batches
    unmeasured = max(measured) + 3
    fallback = latency_model("h100", unmeasured, tables_dir=tmp_path)
    note = fallback.note
    assert fallback.is_estimate and f"measured batches {', '.join(map(str, sorted(measured)))}, not {unmeasured}" in note
    assert f"--batch {max(measured)} for measured latencies" in note
    for device, batch in (("h100", min(measured)), ("roofline:h100", unmeasured), ("a100", unmeasured), (str(tmp_path / "h100.json"), 1)):
        assert latency_model(device, batch, tables_dir=tmp_path).note == ""
    assert latency_model(None, 1, tables_dir=tmp_path) is None  # no source, nothing to note


@pytest.mark.parametrize("path", sorted(TABLES_DIR.glob("*.json")), ids=lambda p: p.name)  # skipped while none is committed
def test_committed_tables_are_measurements_of_their_preset(path):
    """A table shipped under autoq/latency/tables/ loads, names the GPU its file is named for, and says what measured it."""
    table = LatencyTable.load(path)
    assert preset_for(table.device) == get_device(path.stem), f"{path.name} was measured on {table.device!r}"
    assert table.torch and table.triton and table.cuda and table.created
    assert 1 in table.batches and all(r.median_us > 0 for r in table.rows)


def test_a_w8a8_layer_on_a_table_of_a_device_without_a_preset_is_scaled_by_the_bytes():
    """No roofline preset to take the W8A8 kernels' ratio from: the bytes both read and write, int8 activations in and
    their scales too (a batch of 128: the activations weigh)."""
    int8 = QuantSpec.from_name("int8-ch-sym")
    table = TableLatency("Some GPU without a preset", [Measurement(1024, 1024, "int8-ch-sym", 128, 10.0)], batch=128)
    ratio = gemm_bytes(1024, 1024, int8, 128, True) / gemm_bytes(1024, 1024, int8, 128)
    assert ratio > 1.1 and table.layer_us(1024, 1024, int8, int8_activations=True) == pytest.approx(10.0 * ratio)
    assert table.layer_us(1024, 1024, int8) == 10.0


def test_an_unmeasured_format_borrows_the_nearest_group_size_before_the_same_symmetry():
    """int4-g32-sym, with int4-g32-asym and int4-g128-sym measured: g32-asym's time (the same groups of scales to read)
    scaled by the bytes, not g128-sym's (which priced it 4% low on the H200's table at 4096 x 4096)."""
    rows = [Measurement(200, 200, "int4-g32-asym", 1, 30.0), Measurement(200, 200, "int4-g128-sym", 1, 20.0)]
    table = TableLatency("Test GPU", rows, batch=1)
    sym, asym = QuantSpec.from_name("int4-g32-sym"), QuantSpec.from_name("int4-g32-asym")
    assert table.layer_us(200, 200, sym) == pytest.approx(30.0 * gemm_bytes(200, 200, sym, 1) / gemm_bytes(200, 200, asym, 1))


def test_an_unmeasured_format_borrows_the_nearest_bit_width_before_the_same_granularity():
    """int3 per channel, with int4-g128 and int8 per channel measured: int4 (nearer in bits) is scaled by bytes, not
    int8 (the same granularity); swapping the order went unseen with tables of one integer format."""
    rows = [Measurement(200, 200, "int4-g128-asym", 1, 30.0), Measurement(200, 200, "int8-ch-asym", 1, 50.0)]
    table = TableLatency("Test GPU", rows, batch=1)
    int3, int4 = QuantSpec.from_name("int3-ch-asym"), QuantSpec.from_name("int4-g128-asym")
    ratio = gemm_bytes(200, 200, int3, 1) / gemm_bytes(200, 200, int4, 1)
    assert table.layer_us(200, 200, int3) == pytest.approx(30.0 * ratio)


def test_a_format_never_measured_follows_its_measured_sibling_not_a_format_measured_around_the_shape():
    """int6-g32, never measured, with int6-g128 measured at a small shape (2x int4) and int4 over the whole range: it
    stood in by int4 (measured around the shape) scaled by the bytes, at 1.5x int4, half int6-g128's time; it is
    int6-g128's time scaled by the bytes now."""
    table = TableLatency("Test GPU", rows() + [Measurement(100, 100, "int6-g128-asym", 1, 20.0)], batch=1)
    g32, g128 = QuantSpec.from_name("int6-g32-asym"), QuantSpec.from_name("int6-g128-asym")
    assert table.layer_us(400, 400, g128) == pytest.approx(110.0 * 2)
    ratio = gemm_bytes(400, 400, g32, 1) / gemm_bytes(400, 400, g128, 1)
    assert ratio > 1 and table.layer_us(400, 400, g32) == pytest.approx(110.0 * 2 * ratio)


def test_layers_far_outside_the_measured_shapes_get_a_note():
    """A table of LLaMA shapes charged digits-cnn's layers their floor (45-61 us against 11.5-12.5 us) without a word."""
    table = TableLatency("Test GPU", rows(), batch=1, origin="llama.json")  # 10,000 to 160,000 weights a layer
    assert table.coverage_note([("a", 100, 100), ("b", 50, 50), ("c", 800, 800)]) == ""  # within 4x of the ends
    note = table.coverage_note([("a", 100, 100), ("tiny", 30, 30), ("huge", 2000, 2000)])
    assert note.startswith("2 of 3 layers ('tiny', 'huge') lie far outside the shapes the latency table 'llama.json' measured "
                           "(10,000 to 160,000 weights a layer)") and "autoq kernels bench --model" in note


@pytest.mark.parametrize("batch", [1, 16, 128])
def test_the_committed_tables_latency_grows_with_a_square_layer_for_every_format(batch):
    """int5 and int6, measured at MiniLM's shapes only, dropped to int4's time just above them (12.1 us at 768 x 768,
    6.9 us at 784 x 784, batch 16): a latency budget rated them as fast as int4 on every larger layer."""
    table = latency_model("h200", batch)
    for name in ("int2-ch-asym", "int3-g128-asym", "int4-g128-asym", "int5-ch-asym", "int5-g64-asym", "int6-g128-asym", "int6-g32-asym",
                 "int8-ch-asym", "fp16"):
        spec = QuantSpec.from_name(name)
        times = [table.layer_us(n, n, spec) for n in range(384, 4097, 32)]
        assert all(b >= a * 0.98 for a, b in zip(times, times[1:])), name  # equal-work averaging moves a little, no more
    for bits in (5, 6):  # a smaller group never half the time of a larger one (int6-g32 at 1024 x 1024: 8.4 us, g128 16.8)
        g32, g128 = QuantSpec.from_name(f"int{bits}-g32-asym"), QuantSpec.from_name(f"int{bits}-g128-asym")
        assert all(table.layer_us(n, n, g32) >= 0.98 * table.layer_us(n, n, g128) for n in range(384, 4097, 64)), bits


def test_equal_work_shapes_after_other_works_average_among_themselves():
    """The equal-work pair above is the second work measured; as the third (LLaMA's 4096 x 11008 and 11008 x 4096 after
    two square shapes) it must still average only its own shapes, not overwrite another work's row."""
    fmt = "int4-g128-asym"
    measured = rows() + [Measurement(1600, 100, fmt, 1, 130.0), Measurement(100, 1600, fmt, 1, 100.0)]  # 160,000 = 400 x 400's
    table = TableLatency("Test GPU", measured, batch=1)
    # a third shape of that work reads the shapes nearest its aspect: 800 x 200 (4:1) lies as far from 400 x 400 as from
    # 1600 x 100 (16:1), so their mean; 100 x 1600 (1:16) is not among them
    assert table.layer_us(800, 200, INT4) == pytest.approx((110.0 + 130.0) / 2)
    assert table.layer_us(1600, 100, INT4) == 130.0 and table.layer_us(1601, 100, INT4) == pytest.approx(130.0, rel=0.01)
    assert table.layer_us(200, 200, INT4) == 30.0 and table.layer_us(300, 100, INT4) == pytest.approx(10 + 20 * 20_000 / 30_000)


def test_above_the_largest_shape_latency_scales_by_the_exact_ratio_of_work():
    table = TableLatency("Test GPU", [Measurement(128, 128, "int4-g128-asym", 1, 2.0), Measurement(256, 256, "int4-g128-asym", 1, 5.3)],
                         batch=1)
    assert table.layer_us(512, 256, INT4) == pytest.approx(5.3 * 2)  # twice the work: a floor division agrees here
    assert table.layer_us(300, 256, INT4) == pytest.approx(5.3 * 300 / 256)  # and gives 5.3 x 1 here


def test_formats_a_table_never_measured_are_named_as_scaled_estimates():
    """int6-g32 on a table without it is int4's time scaled by the roofline ratio, and was shown as measured, unsaid."""
    table = TableLatency("Test GPU", rows(), batch=1, origin="t.json")
    assert table.format_note([INT4]) == ""
    note = table.format_note([INT4, QuantSpec.from_name("int6-g32-asym"), QuantSpec.from_name("int6-g32-asym"), QuantSpec.half()])
    # fp16 unmeasured is refused, not scaled from an integer format: the note said it was, beside the refusal
    assert note.startswith("the latency table 't.json' did not measure 1 weight format(s) of the space (int6-g32-asym): ")
    with pytest.raises(AutoqError, match="has no rows for the fp16 matmul at batch 1"):
        table.layer_us(100, 100, QuantSpec.half())
    assert "scaled by the ratio of their bytes (no roofline preset for this device)" in note  # 'Test GPU' has none
    preset = TableLatency("NVIDIA H100 80GB HBM3", rows(), batch=1, origin="t.json")
    assert "scaled by the roofline estimate's ratio" in preset.format_note([QuantSpec.from_name("int6-g32-asym")])
    assert "W8A8" not in note and preset.format_note([INT4], w8a8=True).startswith(
        "the latency table 't.json' measured no W8A8 kernel (int8-token rows): layers with int8 activations take the weight-only "
        "kernel's time, scaled by the roofline estimate's ratio of the W8A8 kernels to it")


def test_the_coverage_note_takes_the_widest_range_any_format_measured():
    """Layers within one format's range are not 'far outside' because another format was measured over less."""
    measured = rows() + [Measurement(300, 300, "int8-ch-asym", 1, 40.0), Measurement(400, 400, "int8-ch-asym", 1, 60.0)]
    table = TableLatency("Test GPU", measured, batch=1)  # int4: 10,000 to 160,000 weights; int8: 90,000 to 160,000
    assert table.coverage_note([("a", 100, 100), ("b", 50, 50)]) == ""
