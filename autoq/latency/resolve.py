"""``--device NAME|TABLE.json`` -> a `LatencyModel`.

* a path: that measured table;
* a preset name (``h100``, ``h200``, ...): the table committed for it under
  ``autoq/latency/tables/<name>.json`` when one exists and measured the batch (measured
  beats estimated), else the roofline estimate from the preset's published peaks (with a
  ``note`` saying why, where a table exists but did not measure the batch);
* ``roofline:<name>``: the roofline estimate, even where a committed table exists.
"""

from __future__ import annotations

from pathlib import Path

from autoq.errors import AutoqError
from autoq.latency.base import LatencyModel
from autoq.latency.devices import DEVICES, get_device
from autoq.latency.measured import Measurement, TableLatency
from autoq.latency.roofline import RooflineLatency

TABLES_DIR = Path(__file__).parent / "tables"
ROOFLINE_PREFIX = "roofline:"


def committed_table(preset: str, tables_dir: Path = TABLES_DIR) -> Path | None:
    """The latency table measured on ``preset``'s GPU and shipped with autoq, if any."""
    path = Path(tables_dir) / f"{preset.lower()}.json"
    return path if path.is_file() else None


def is_table_path(device: str) -> bool:
    """Whether ``--device`` names a latency table file: a ``.json`` name, or an existing file, but not a preset's bare
    name (a file called ``h100`` in the working folder took ``--device h100`` from its preset, as invalid JSON); write
    ``./h100`` for such a file."""
    if device.lower().startswith(ROOFLINE_PREFIX):  # a preset's estimate, whatever follows: said by its own check
        return False
    if device.lower().endswith(".json"):
        return True
    bare_preset = device.lower() in DEVICES and Path(device).name == device  # ./h100 for a file or folder of that name
    return (Path(device).is_file() or Path(device).is_dir()) and not bare_preset  # a folder: refused as one by load_table


def portable_device(device: str | None) -> str | None:
    """``device`` as a command run from another folder must give it: a latency table file by its absolute path, a
    device's name as is."""
    return str(Path(device).resolve()) if device and is_table_path(device) else device


def load_table(path: str | Path, batch: int = 1) -> TableLatency:
    """A measured latency table (the JSON ``autoq kernels bench`` writes) at one batch size."""
    from autoq.kernels.table import LatencyTable

    file = Path(path)
    if file.is_dir():
        raise AutoqError(f"latency table {str(path)!r} is a folder; pass the latency table JSON file in it (the one 'autoq kernels "
                         "bench --out' wrote), or a preset such as --device h100")
    if not file.is_file():
        raise AutoqError(f"latency table {str(path)!r} does not exist; write one with 'autoq kernels bench' on the target GPU, or pass a preset such as --device h100")
    return _table_latency(LatencyTable.load(file), batch, str(path))


def _table_latency(table, batch: int, origin: str) -> TableLatency:
    """A loaded :class:`autoq.kernels.table.LatencyTable` at one batch size: for each (shape, format, batch) the kernel
    an exported model runs there, else the fastest measured (``deployed()``), weight-only and W8A8."""
    from autoq.kernels.table import INT8_TOKENS

    rows = [Measurement(r.n, r.k, r.format, r.batch, r.median_us, r.activation) for r in (*table.deployed(), *table.deployed(INT8_TOKENS))]
    return TableLatency(table.device, rows, batch, origin=origin, timing=table.timing)


def latency_model(device: str | None, batch: int = 1, tables_dir: Path = TABLES_DIR) -> LatencyModel | None:
    """The latency source for ``device`` (a table path, a preset name, ``roofline:<preset>``); ``None`` without one."""
    if device is None:
        return None
    if not isinstance(batch, int) or batch < 1:
        raise AutoqError(f"batch must be a positive integer (rows of activations per forward, e.g. 1 or 16), got {batch!r}")
    if is_table_path(device):
        return load_table(device, batch)
    if device.lower().startswith(ROOFLINE_PREFIX):
        name = device[len(ROOFLINE_PREFIX):]
        if name.lower() not in DEVICES:  # get_device's message offers a table path, which roofline: cannot take
            raise AutoqError(f"--device {device!r}: roofline: takes a preset's name ({', '.join(DEVICES)}), not {name!r}; a measured "
                             f"table's path goes without the prefix (--device {name if name.lower().endswith('.json') else 'TABLE.json'})")
        return RooflineLatency.named(name, batch)
    preset = get_device(device)  # an unknown name fails here, listing the presets
    table = committed_table(preset.name, tables_dir)
    if table is not None:
        from autoq.kernels.table import LatencyTable

        measured = LatencyTable.load(table)  # read once: checked for the batch, then used
        if batch in measured.batches:
            return _table_latency(measured, batch, str(table))
        # the fallback is labelled an estimate everywhere; the note says so once more, where the search starts
        batches = sorted(measured.batches)
        nearest = min(batches, key=lambda b: abs(b - batch))
        return RooflineLatency.named(preset.name, batch, note=(
            f"the {preset.name} table shipped with autoq measured batches {', '.join(map(str, batches))}, not {batch}: latency "
            f"is the roofline estimate; pass --batch {nearest} for measured latencies"))
    return RooflineLatency.named(preset.name, batch)
