"""Trade classification + cumulative delta, trades per second: the vectorised `classify` and
`cumulative_delta` beside a per-tick Python loop of the same rule and delta, in one run.

    python -m bench.classify [--trades 1000000] [--loop-tiles 5] [--repeat 7]

Data: the recorded Binance BTCUSDT sample (9,999 trades and 9,999 quotes from
ibstream/datasets/recorded, or $IBSTREAM_DATA) tiled until it holds `--trades` trades, each copy shifted
in time by the sample's span, in arrival order. A second layout deals the copies to 4
contracts that trade at the same time (merged by stamp), which takes the grouped paths.
The loop runs on the first `--loop-tiles` copies (its cost is linear in ticks) and must
agree with the vectorised result there (sides and deltas exactly). Figures are the best of
`--repeat` interleaved runs; on a shared machine only the ratios, measured in the same run,
mean much. The goal: classify + delta at 10 M trades/s or more, and 20 times the loop.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import pandas as pd

from ibstream.analytics import DEFAULT_METHOD, classify, cumulative_delta
from ibstream.datasets import load_recorded

SAMPLE = "binance-futures-btcusdt-2020-02-22"


def tiled(ticks: pd.DataFrame, tiles: int, contracts: int = 1) -> pd.DataFrame:
    """`tiles` copies of `ticks`; copy i belongs to contract i % contracts and starts where
    copy i - contracts ends, so the contracts' copies overlap in time."""
    stamps = ticks.index.asi8
    span = int(stamps[-1] - stamps[0]) + 1
    copy = np.repeat(np.arange(tiles), len(ticks))
    frame = pd.concat([ticks] * tiles, ignore_index=True)
    frame["contract_id"] = copy % contracts + 1
    exchange = np.tile(ticks["exchange"].to_numpy(object), tiles)  # one chunk, as loaded
    frame["exchange"] = pd.array(exchange, dtype=ticks["exchange"].dtype)
    shifted = np.tile(stamps, tiles) + (copy // contracts) * span
    frame.index = pd.DatetimeIndex(pd.to_datetime(shifted, utc=True), name="time")
    if contracts > 1:
        frame = frame.iloc[np.argsort(shifted, kind="stable")]
    return frame


def vectorised(ticks: pd.DataFrame, method: str) -> tuple[pd.DataFrame, pd.Series]:
    trades = classify(ticks, method)
    return trades, cumulative_delta(trades)


def loop(ticks: pd.DataFrame, method: str) -> tuple[list[str], list[float]]:
    """The same rule, one tick at a time (quote rule or Lee-Ready with the tick test)."""
    quotes: dict[int, tuple[float, float]] = {}
    last_price: dict[int, float] = {}
    last_move: dict[int, int] = {}
    delta: dict[int, float] = {}
    sides, deltas = [], []
    columns = ("contract_id", "tick_type", "price", "size", "bid_price", "ask_price")
    for c, kind, price, size, bid, ask in zip(*(ticks[n].tolist() for n in columns), strict=True):
        if kind == "bid_ask":
            quotes[c] = (bid, ask)
            continue
        if kind != "last" and kind != "all_last":
            continue
        bid, ask = quotes.get(c, (np.nan, np.nan))
        before = last_price.get(c)
        if before is not None and price != before:
            last_move[c] = 1 if price > before else -1
        last_price[c] = price
        if method == "quote":
            move = (price >= ask) - (price <= bid)
        else:
            mid = (bid + ask) / 2
            move = (1 if price > mid else -1 if price < mid else 0) if bid < ask else 0
            move = move or last_move.get(c, 0)
        sides.append("buy" if move > 0 else "sell" if move < 0 else "neutral")
        deltas.append(delta.get(c, 0.0) + move * size)
        delta[c] = deltas[-1]
    return sides, deltas


def best(repeat: int, jobs: dict[str, Callable[[], object]]) -> dict[str, tuple[float, object]]:
    """Per job, its shortest time in seconds over `repeat` rounds and its result. The rounds
    interleave the jobs, so a burst of load on a shared machine hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in jobs}
    results: dict[str, object] = {}
    for _ in range(repeat):
        for name, job in jobs.items():
            t0 = time.perf_counter()
            results[name] = job()
            times[name].append(time.perf_counter() - t0)
    return {name: (min(times[name]), results[name]) for name in jobs}


def machine() -> str:
    """The processor, cores and library versions, for the record."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"numpy {np.__version__}, pandas {pd.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--loop-tiles", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    sample = load_recorded(SAMPLE).ticks
    tiles = math.ceil(args.trades / int(sample["tick_type"].eq("last").sum()))
    print(f"machine: {machine()}")
    print("trades per second, best of runs; ratio: classify + delta over the per-tick loop")
    print(
        f"{'method':10s} {'contracts':>9s} {'trades':>10s} {'classify':>12s} "
        f"{'+ delta':>12s} {'loop':>10s} {'ratio':>6s}  goal (10 M/s, 20x)"
    )
    for contracts in (1, 4):
        ticks = tiled(sample, tiles, contracts)
        small = tiled(sample, args.loop_tiles, contracts)
        for method in (DEFAULT_METHOD, "quote"):
            runs = best(
                args.repeat,
                {
                    "classify": partial(classify, ticks, method),
                    "both": partial(vectorised, ticks, method),
                    "loop": partial(loop, small, method),
                },
            )
            (alone, trades), (both, _), (looped, (sides, deltas)) = runs.values()
            check, cum = vectorised(small, method)
            if sides != check["side"].astype(str).tolist() or deltas != cum.tolist():
                raise SystemExit(f"loop and classify disagree for {method}")
            n, slow = len(trades), len(sides) / looped
            fast, ratio = n / both, n / both / slow
            met = "met" if fast >= 10e6 and ratio >= 20 else "not met"
            print(
                f"{method:10s} {contracts:9d} {n:10,d} {n / alone:12,.0f} {fast:12,.0f} "
                f"{slow:10,.0f} {ratio:5.1f}x  {met}"
            )


if __name__ == "__main__":
    main()
