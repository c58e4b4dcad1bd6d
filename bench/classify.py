"""Trade classification + cumulative delta, trades per second: the vectorised `classify`
beside a per-tick Python loop of the same rule, measured in the same run.

    python -m bench.classify [--tiles 100] [--loop-tiles 5] [--repeat 5]

Data: the recorded Binance BTCUSDT sample (9,999 trades and 9,999 quotes from
../shared/data, or $IBSTREAM_DATA) tiled `--tiles` times, each copy shifted in time by the
sample's span: 1 M trades and 1 M quotes in arrival order. A second layout deals the copies
to 4 contracts that trade at the same time (merged by stamp), which takes the grouped path.
The loop runs on the first `--loop-tiles` copies (its cost is linear in ticks) and must
agree with the vectorised result there. Figures are the best of `--repeat` runs; only the
ratios mean anything on a shared machine.
"""

from __future__ import annotations

import argparse
import time

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


def best(repeat: int, fn, *args: object) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=100)
    parser.add_argument("--loop-tiles", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sample = load_recorded(SAMPLE).ticks
    print("trades per second (best of runs); ratio = classify + delta over the per-tick loop")
    print(
        f"{'method':10s} {'contracts':>9s} {'trades':>10s} {'classify':>12s} "
        f"{'+ delta':>12s} {'loop':>10s} {'ratio':>6s}"
    )
    for contracts in (1, 4):
        ticks = tiled(sample, args.tiles, contracts)
        small = tiled(sample, args.loop_tiles, contracts)
        for method in (DEFAULT_METHOD, "quote"):
            alone, trades = best(args.repeat, classify, ticks, method)
            both, _ = best(args.repeat, vectorised, ticks, method)
            looped, (sides, deltas) = best(max(1, args.repeat // 2), loop, small, method)
            check, cum = vectorised(small, method)
            if sides != check["side"].astype(str).tolist() or not np.allclose(deltas, cum):
                raise SystemExit(f"loop and classify disagree for {method}")
            n, slow = len(trades), len(sides) / looped
            print(
                f"{method:10s} {contracts:9d} {n:10,d} {n / alone:12,.0f} {n / both:12,.0f} "
                f"{slow:10,.0f} {n / both / slow:5.0f}x"
            )


if __name__ == "__main__":
    main()
