"""``--device NAME|TABLE.json`` -> a `LatencyModel`: a measured table if given a file, else a roofline preset."""

from __future__ import annotations

from pathlib import Path

from autoq.errors import AutoqError
from autoq.latency.base import LatencyModel
from autoq.latency.measured import Measurement, TableLatency
from autoq.latency.roofline import RooflineLatency


def is_table_path(device: str) -> bool:
    return device.lower().endswith(".json") or Path(device).is_file()


def load_table(path: str | Path, batch: int = 1) -> TableLatency:
    """A measured latency table (the JSON ``autoq kernels bench`` writes) at one batch size."""
    from autoq.kernels.table import LatencyTable

    file = Path(path)
    if not file.is_file():
        raise AutoqError(f"latency table {str(path)!r} does not exist; write one with 'autoq kernels bench' on the target GPU, or pass a preset such as --device h100")
    table = LatencyTable.load(file)
    # select(): the fastest kernel measured for each (shape, format, batch)
    rows = [Measurement(r.n, r.k, r.format, r.batch, r.median_us) for r in table.select()]
    return TableLatency(table.device, rows, batch, origin=str(path))


def latency_model(device: str | None, batch: int = 1) -> LatencyModel | None:
    """The latency source for ``device`` (a preset name or a table path); ``None`` without a device."""
    if device is None:
        return None
    if not isinstance(batch, int) or batch < 1:
        raise AutoqError(f"batch must be a positive integer (rows of activations per forward, e.g. 1 or 16), got {batch!r}")
    if is_table_path(device):
        return load_table(device, batch)
    return RooflineLatency.named(device, batch)
