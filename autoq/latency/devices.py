"""Published peak figures of common GPUs, for the roofline latency estimate.

Dense (no sparsity) tensor-core peaks and memory bandwidth from the vendors'
data sheets. They are upper bounds no kernel reaches: a latency computed from
them is an *estimate* and is labelled ``estimate:roofline:<name>`` everywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from autoq.errors import AutoqError


@dataclass(frozen=True)
class DevicePreset:
    """One GPU: memory bandwidth (GB/s), fp16 and int8 tensor peaks (dense), kernel launch overhead."""

    name: str
    description: str
    bandwidth_gbs: float
    fp16_tflops: float
    int8_tops: float
    launch_us: float = 4.0  # typical CUDA kernel launch + tail, an assumption, not a measurement


DEVICES: dict[str, DevicePreset] = {
    p.name: p
    for p in (
        DevicePreset("h100", "NVIDIA H100 SXM5 80GB (HBM3)", 3350.0, 989.4, 1978.9),
        DevicePreset("h100-pcie", "NVIDIA H100 PCIe 80GB (HBM2e)", 2000.0, 756.0, 1513.0),
        DevicePreset("h200", "NVIDIA H200 SXM 141GB (HBM3e)", 4800.0, 989.4, 1978.9),
        DevicePreset("a100", "NVIDIA A100 SXM4 80GB (HBM2e)", 2039.0, 312.0, 624.0),
        DevicePreset("a100-40gb", "NVIDIA A100 SXM4 40GB (HBM2)", 1555.0, 312.0, 624.0),
        DevicePreset("l40s", "NVIDIA L40S 48GB (GDDR6)", 864.0, 362.1, 733.0),
        DevicePreset("a10g", "NVIDIA A10G 24GB (GDDR6)", 600.0, 125.0, 250.0),
    )
}


def get_device(name: str) -> DevicePreset:
    """A preset by name (case-insensitive); an unknown name is an error listing the known ones."""
    preset = DEVICES.get(name.lower())
    if preset is None:
        # 'cuda' asked where to run: the error's presets, taken as the answer, priced an H100 and ran on the CPU unsaid
        where = (" (--device names the GPU whose kernel latency the search prices, not where it runs: the search runs "
                 "where the model is, a built-in on the CPU; pass a module and batches on a GPU from Python to run there)"
                 if re.fullmatch(r"(cuda|gpu|cpu|mps|xpu)(:\d+)?", name.strip().lower()) else "")
        raise AutoqError(
            f"unknown device {name!r}{where}; use a preset ({', '.join(DEVICES)}: its committed measured table where there is "
            "one, else a roofline estimate), or the path of a latency table JSON written by 'autoq kernels bench'"
        )
    return preset


def preset_for(device_name: str) -> DevicePreset | None:
    """The preset named in a measured table's device string (``NVIDIA H100 80GB HBM3`` -> h100), most specific first:
    every part of the preset's name is a word of it (``NVIDIA A100-SXM4-40GB`` -> a100-40gb, ``... -80GB`` -> a100;
    ``NVIDIA RTX A1000`` -> none: a100 is in it, but not as a word)."""
    words = set(re.split(r"[^a-z0-9]+", device_name.lower()))
    for preset in sorted(DEVICES.values(), key=lambda p: (-len(p.name.split("-")), -len(p.name))):
        if all(part in words for part in preset.name.split("-")):
            return preset
    return None
