"""Roofline estimates: hand-computed values, regimes, labels and device presets."""

from __future__ import annotations

import pytest

from autoq.errors import AutoqError
from autoq.latency import DEVICES, RooflineLatency, gemm_bytes, get_device, latency_model, preset_for, roofline_us
from autoq.quant import QuantSpec

H100 = get_device("h100")
INT4 = QuantSpec.from_name("int4-g128-asym")
FP16 = QuantSpec.half()


def test_memory_bound_value_by_hand():
    # 4096x4096 int4 g128 asym: 8 MiB of codes + 4096*32 groups * 4 bytes; activations 2*(4096+4096) bytes
    expected_bytes = 4096 * 4096 // 2 + 4096 * 32 * 4 + 2 * (4096 + 4096)
    assert gemm_bytes(4096, 4096, INT4, 1) == expected_bytes
    assert roofline_us(4096, 4096, INT4, 1, H100) == pytest.approx(expected_bytes / 3350e9 * 1e6 + H100.launch_us)


def test_compute_bound_at_large_batch():
    # 2*4096*4096*4096 FLOPs over 989.4 TFLOPS dominates the bytes at batch 4096
    us = roofline_us(4096, 4096, INT4, 4096, H100)
    assert us == pytest.approx(2 * 4096**3 / 989.4e12 * 1e6 + H100.launch_us)
    assert us == pytest.approx(roofline_us(4096, 4096, FP16, 4096, H100), rel=1e-9)  # same fp16 tensor-core roof


def test_a_compute_bound_w8a8_layer_runs_at_the_int8_peak():
    """W8A8's matmul is int8 x int8: compute-bound, it is timed at the int8 peak (1979 TOPS on an H100), not fp16's."""
    n = k = 8192
    us = roofline_us(n, k, QuantSpec(8, "channel", None, True), 65536, H100, int8_activations=True)
    assert H100.int8_tops != H100.fp16_tflops
    assert us == pytest.approx(2.0 * n * k * 65536 / (H100.int8_tops * 1e12) * 1e6 + 2 * H100.launch_us)  # two launches


def test_int4_speedup_at_batch_1_is_below_the_ideal_3_88x():
    speedup = roofline_us(4096, 4096, FP16, 1, H100) / roofline_us(4096, 4096, INT4, 1, H100)
    assert 2.0 < speedup < 16 / 4.125


def test_fewer_bits_never_slower_in_the_estimate():
    lat = [roofline_us(1536, 384, QuantSpec(b, "channel"), 1, H100) for b in (2, 3, 4, 5, 6, 8)]
    assert lat == sorted(lat)


def test_label_says_estimate():
    model = RooflineLatency.named("h100", batch=16)
    assert model.source == "estimate:roofline:h100"
    assert model.is_estimate and model.batch == 16
    assert model.layer_us(384, 384, INT4) == pytest.approx(roofline_us(384, 384, INT4, 16, H100))


def test_presets_have_sane_published_figures():
    assert {"h100", "h200", "a100"} <= set(DEVICES)
    for preset in DEVICES.values():
        assert 500 <= preset.bandwidth_gbs <= 5000 and 100 <= preset.fp16_tflops <= 1000
    assert get_device("H200").bandwidth_gbs > get_device("h100").bandwidth_gbs > get_device("a100").bandwidth_gbs


@pytest.mark.parametrize("name, preset", [("NVIDIA H100 80GB HBM3", "h100"), ("NVIDIA H100 PCIe", "h100-pcie"), ("NVIDIA A100-SXM4-80GB", "a100"),
                                          ("NVIDIA A100-SXM4-40GB", "a100-40gb"), ("NVIDIA A100-PCIE-40GB", "a100-40gb"), ("NVIDIA H200", "h200"),
                                          ("NVIDIA L40S", "l40s"), ("NVIDIA A10G", "a10g"), ("Test GPU", None),
                                          ("NVIDIA RTX A1000 6GB Laptop GPU", None), ("NVIDIA H100 NVL", "h100")])
def test_preset_for_device_strings(name, preset):
    found = preset_for(name)
    assert (found.name if found else None) == preset


def test_unknown_device_lists_presets_and_tables():
    with pytest.raises(AutoqError, match="h100.*latency table JSON"):
        latency_model("tpu9000")


@pytest.mark.parametrize("batch", [0, -1, 1.5])
def test_bad_batch(batch):
    with pytest.raises(AutoqError, match="batch"):
        latency_model("h100", batch)


def test_no_device_no_model():
    assert latency_model(None) is None


def test_bytes_are_the_kernels_layout_and_w8a8_is_two_kernels():
    """3/5/6-bit codes are padded into 32-bit words where the kernels read them (the tight bit stream was 6.8% short),
    and W8A8 quantizes its activations in a kernel of its own: the estimate had it as fast as int8 weight-only, where the
    H200 measured it twice as slow at batch 1."""
    from autoq.kernels.formats import packed_nbytes

    int3, int8 = QuantSpec.from_name("int3-ch-asym"), QuantSpec.from_name("int8-ch-sym")
    assert gemm_bytes(4096, 4096, int3, 1) == packed_nbytes(int3, 4096, 4096) + 2 * (4096 + 4096) > int3.storage_bytes(4096, 4096) * 1.06
    w8a8 = roofline_us(4096, 4096, int8, 1, H100, int8_activations=True)
    assert w8a8 > roofline_us(4096, 4096, int8, 1, H100) + H100.launch_us * 0.99
    assert gemm_bytes(4096, 4096, int8, 1, int8_activations=True) == packed_nbytes(int8, 4096, 4096) + 2 * 4096 + 2 * (4096 + 4) + 2 * 4096
