"""Ticks per second from a recorded day on disk into the tick frame (`Store.ticks`), beside
pyarrow reading the same files into pandas (`dataset.to_table().to_pandas()`) in the same run.

    python -m bench.store_read [--ticks 5000000] [--repeat 3]

The bench writes a day of ES (80 % quotes, 20 % trades, one part per stream and hour, as
compaction leaves it) into a temporary store. Each figure is the best of `--repeat` rounds;
only the ratios mean anything on a shared machine.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa

import ibstream.store
from ibstream.model import ContractInfo
from ibstream.store import layout, parts

ES = ContractInfo(637533641, "ES", "FUT", "CME", "USD", "ESZ6", 0.25, multiplier="50")
DAY_NS = 86_400_000_000_000
HOUR_NS = 3_600_000_000_000


def write_day(root: layout.StoreRoot, n: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    start = 1_796_601_600_000_000_000  # a UTC midnight
    recv = start + np.sort(rng.integers(0, DAY_NS - n, n)) + np.arange(n)
    trade = rng.random(n) < 0.2
    for kind, mask in (("last", trade), ("bid_ask", ~trade)):
        t, m = recv[mask], int(mask.sum())
        price = 6000 + np.cumsum(rng.choice([-0.25, 0, 0.25], m))
        none = np.full(m, np.nan)
        quote = kind == "bid_ask"
        table = pa.table(
            {
                "time": pa.array(t).cast(layout.TIME),
                "sequence": np.arange(1, m + 1),
                "price": none if quote else price,
                "size": none if quote else rng.integers(1, 20, m).astype(float),
                "bid_price": price if quote else none,
                "bid_size": rng.integers(1, 90, m).astype(float) if quote else none,
                "ask_price": price + 0.25 if quote else none,
                "ask_size": rng.integers(1, 90, m).astype(float) if quote else none,
                "mid_price": none,
                "exchange": pa.nulls(m, pa.string()) if quote else pa.array(["CME"] * m),
                "conditions": pa.nulls(m, pa.string()),
                "ib_time": pa.array(t // 10**9 * 10**9).cast(layout.TIME),
                "server_id": pa.array(["bench"] * m),
                "symbol": pa.array([ES.symbol] * m),
                "local_symbol": pa.array([ES.local_symbol] * m),
                "source": pa.array(["live"] * m),
            },
            schema=layout.TICK_SCHEMA,
        )
        hours = t // HOUR_NS
        for h in np.unique(hours):
            rows = table.filter(pa.array(hours == h))
            day, hour = layout.utc_day_hour(int(h * HOUR_NS))
            part = parts.Part(day, hour, ES.contract_id, kind, rows)
            parts.write_part(root, part, "bench", ES.to_dict())


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ticks", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = layout.open_root(folder)
        write_day(root, args.ticks)
        store = ibstream.store.open(folder)
        dataset = layout.ticks_dataset(root)
        n = args.ticks
        figures = {
            "pyarrow -> pandas (baseline)": best(
                lambda: dataset.to_table().to_pandas(), args.repeat
            ),
            "Store.ticks() (both streams, merged)": best(store.ticks, args.repeat),
            "Store.ticks('ES', 'bid_ask')": best(lambda: store.ticks("ES", "bid_ask"), args.repeat),
        }
        base = figures["pyarrow -> pandas (baseline)"]
        for name, seconds in figures.items():
            rows = n if "bid_ask'" not in name else len(store.ticks("ES", "bid_ask"))
            rate = rows / seconds / 1e6
            print(f"{name:<40} {rate:6.2f} M ticks/s  {base / seconds * rows / n:5.2f}x baseline")


if __name__ == "__main__":
    main()
