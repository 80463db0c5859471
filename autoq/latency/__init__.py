"""Per-layer latency for the cost model: measured kernel tables, or a roofline estimate.

Every latency autoq reports carries its source: ``table:<device>`` when it comes
from a table measured by ``autoq kernels bench``, ``estimate:roofline:<device>``
when it is computed from a device preset's published peaks.
"""

from autoq.latency.base import LatencyModel, format_latency_us
from autoq.latency.devices import DEVICES, DevicePreset, get_device, preset_for
from autoq.latency.measured import Measurement, TableLatency
from autoq.latency.resolve import latency_model, load_table
from autoq.latency.roofline import RooflineLatency, gemm_bytes, roofline_us

__all__ = [
    "DEVICES",
    "DevicePreset",
    "LatencyModel",
    "Measurement",
    "RooflineLatency",
    "TableLatency",
    "format_latency_us",
    "gemm_bytes",
    "get_device",
    "latency_model",
    "load_table",
    "preset_for",
    "roofline_us",
]
