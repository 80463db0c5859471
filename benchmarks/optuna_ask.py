"""Benchmark: what one proposal costs in the Optuna storage, by layer count and SQLite setting.

A search asks its study for each proposal (an over-budget one too: it is told, not evaluated), and Optuna writes each
layer's parameter to the storage in a transaction of its own. This times autoq's own `OptunaStrategy` ask and tell
(a random sampler, so that the storage's cost is not hidden by TPE's) over the default space's 13 options a layer,
in memory and in SQLite as autoq opens it (rollback journal, synchronous=FULL), and in SQLite with the WAL journal
and synchronous=NORMAL or OFF, which autoq does not set: the rows say what they would buy. On this 2-core x86 CPU
(2026-12-03), idle: 37 layers (MiniLM) 2.3 ms in memory, 140 ms in SQLite, 37 ms with WAL/NORMAL; 200 layers 9 ms,
458 ms, 171 ms. With two other jobs writing to the same disk, 37 layers took 757 ms in SQLite and 93 ms with
WAL/NORMAL. A MiniLM search of 100 trials and 55 over-budget proposals spends about 22 of its 356 s here. WAL is
left unset: it persists in the user's file, needs the -wal file beside it until a checkpoint (a database copied
after a kill without it loses the last trials), and does not work on a network filesystem.

    python benchmarks/optuna_ask.py [--layers 37 200] [--asks 10] [--out ...json]

Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import optuna
from provenance import OUT_HELP, count, out_file, provenance

from autoq.engine.strategy import OptunaStrategy
from autoq.model import LayerInfo
from autoq.search_spaces import load_preset
from autoq.space import SearchSpace

MODES = ("memory", "sqlite", "sqlite WAL/NORMAL", "sqlite WAL/OFF")


def _storage(mode: str, folder: Path) -> str | optuna.storages.BaseStorage | None:
    """The storage of ``mode``: ``None`` in memory, a URL as autoq passes one, or an RDBStorage with the pragmas set."""
    if mode == "memory":
        return None
    url = f"sqlite:///{folder / 'bench.db'}"
    if mode == "sqlite":
        return url
    from sqlalchemy import event

    journal, synchronous = mode.split()[1].split("/")
    storage = optuna.storages.RDBStorage(url)

    @event.listens_for(storage.engine, "connect")
    def _pragmas(connection, record) -> None:  # type: ignore[no-untyped-def]
        cursor = connection.cursor()
        cursor.execute(f"PRAGMA journal_mode={journal}")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.close()

    storage.engine.dispose()  # connections opened before the listener would miss the pragmas
    return storage


def time_asks(n_layers: int, mode: str, asks: int) -> float:
    """Milliseconds per ask and tell of an ``n_layers`` search over the default space, in storage ``mode``."""
    layers = [LayerInfo(f"block.{i}.linear", "linear", 512, 512) for i in range(n_layers)]
    space = SearchSpace.build(load_preset("default"), layers)
    with tempfile.TemporaryDirectory() as tmp:
        strategy = OptunaStrategy(space, optuna.samplers.RandomSampler(seed=0), "bench", _storage(mode, Path(tmp)))
        strategy.tell(strategy.ask(), (0.9, 4.0), violation=-0.1)  # not timed: the first one sets up caches and tables
        start = time.perf_counter()
        for _ in range(asks):
            proposal = strategy.ask()
            strategy.tell(proposal, (0.9, 4.0), violation=-0.1)
        return (time.perf_counter() - start) / asks * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=count, nargs="+", default=[37, 200],
                        help="layer counts of the searched model, each timed in every storage (default: 37 200; MiniLM has 37)")
    parser.add_argument("--asks", type=count, default=10,
                        help="timed ask-and-tell rounds per layer count and storage, after an untimed one (default: 10)")
    parser.add_argument("--out", type=out_file, default=str(Path(__file__).parent / "results" / "optuna_ask.json"), help=OUT_HELP)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = [{"layers": n, "storage": mode, "ms_per_ask_and_tell": round(time_asks(n, mode, args.asks), 1)}
            for n in args.layers for mode in MODES]
    print(f"{'layers':>7} {'storage':>18} {'ms per ask+tell':>16}")
    for row in rows:
        print(f"{row['layers']:>7} {row['storage']:>18} {row['ms_per_ask_and_tell']:>16}")
    Path(args.out).write_text(json.dumps({**provenance(), "asks": args.asks, "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
