"""Toxicity and microstructure analytics, trades (or quotes) per second: each vectorised
function beside a per-trade Python loop of the same definition, in one run.

    python -m bench.orderflow_toxicity [--trades 1000000] [--loop-tiles 5] [--repeat 3]

Data: the recorded Binance BTCUSDT sample tiled to `--trades` trades (`bench.classify.tiled`:
one contract, then four trading at the same time), classified once by the default method;
its quotes (as many as trades) feed microprice and quote_imbalance, its one-second bars
delta_divergence. Buckets hold a hundredth of one copy's volume (about 100 trades), windows
are 50 buckets. The loops run on the first `--loop-tiles` copies (their cost is linear in
rows) and must agree with the vectorised result there; their rate is rows per second of that
slice. Figures are the best of `--repeat` interleaved runs; on a shared machine only the
ratios, measured in the same run, mean much. The goal: VPIN 20 times the loop or more.
"""

from __future__ import annotations

import argparse
import math
from collections import deque
from functools import partial

import numpy as np
import pandas as pd

from bench.classify import SAMPLE, best, machine, tiled
from ibstream.analytics import (
    absorption,
    bars,
    classify,
    delta_divergence,
    microprice,
    quote_imbalance,
    vpin,
)
from ibstream.datasets import load_recorded

WINDOW, TICK, LOOKBACK = 50, 0.01, 20
ABSORB = {"min_volume": 20.0, "ticks": 100, "tick_size": TICK, "max_gap": "5s"}  # $1 band


def vpin_loop(trades: pd.DataFrame, vb: float, method: str) -> list[float]:
    """VPIN trade by trade: running volume per contract, buckets cut at multiples of vb."""
    state: dict[int, list] = {}
    out = []
    columns = ("contract_id", "price", "size", "side")
    for c, price, size, side in zip(*(trades[k].tolist() for k in columns), strict=True):
        s = state.setdefault(c, [0.0, 0, 0.0, 0.0, math.nan, math.nan, deque(), deque()])
        total, j, buy, sell, last, close, changes, imbalances = s
        size = 0.0 if size != size else size
        last = last if price != price else price
        before, total = total, total + size
        while total >= (j + 1) * vb and total > before:
            piece = (j + 1) * vb - max(before, j * vb)
            buy, sell = buy + piece * (side == "buy"), sell + piece * (side == "sell")
            if method == "bvc":
                change, close = last - close, last
                changes.append(change)
                if len(changes) > WINDOW:
                    changes.popleft()
                buy = vb * _share(change, [x for x in changes if x == x])
                sell = vb - buy
            imbalances.append(abs(buy - sell) / vb)
            if len(imbalances) > WINDOW:
                imbalances.popleft()
            out.append(sum(imbalances) / WINDOW if len(imbalances) == WINDOW else math.nan)
            j, buy, sell = j + 1, 0.0, 0.0
        if total > max(before, j * vb):
            piece = total - max(before, j * vb)
            buy, sell = buy + piece * (side == "buy"), sell + piece * (side == "sell")
        s[:6] = total, j, buy, sell, last, close
    return out


def _share(change: float, window: list[float]) -> float:
    if len(window) < 2 or change != change:
        return math.nan
    mean = sum(window) / len(window)
    sigma = math.sqrt(sum((x - mean) ** 2 for x in window) / (len(window) - 1))
    if sigma == 0:
        return 0.5 if change == 0 else float(change > 0)
    return 0.5 * (1 + math.erf(change / sigma / math.sqrt(2)))


def microprice_loop(ticks: pd.DataFrame) -> list[float]:
    out = []
    columns = ("tick_type", "bid_price", "bid_size", "ask_price", "ask_size")
    for kind, bid, bs, ask, az in zip(*(ticks[k].tolist() for k in columns), strict=True):
        if kind == "bid_ask":
            bid = math.nan if bs == 0 else bid
            ask = math.nan if az == 0 else ask
            total = bs + az
            out.append((bid * az + ask * bs) / total if total else math.nan)
    return out


def imbalance_loop(ticks: pd.DataFrame) -> list[float]:
    out = []
    columns = ("tick_type", "bid_size", "ask_size")
    for kind, bs, az in zip(*(ticks[k].tolist() for k in columns), strict=True):
        if kind == "bid_ask":
            out.append((bs - az) / (bs + az) if bs + az > 0 else math.nan)
    return out


def absorption_loop(trades: pd.DataFrame) -> int:
    """Runs trade by trade; the number of events."""
    band = (ABSORB["ticks"] + 1e-6) * TICK
    gap = pd.Timedelta(ABSORB["max_gap"]).value
    runs: dict[int, list] = {}
    events = 0

    def close(run: list) -> int:
        return (run[2] >= ABSORB["min_volume"]) + (run[3] >= ABSORB["min_volume"])

    stamps = trades.index.asi8.tolist()
    columns = ("contract_id", "price", "size", "side")
    rows = zip(stamps, *(trades[k].tolist() for k in columns), strict=True)
    for t, c, price, size, side in rows:
        run = runs.get(c)
        if run is not None and (abs(price - run[0]) > band or t - run[1] > gap):
            events += close(run)
            run = None
        if run is None:
            run = runs[c] = [price, t, 0.0, 0.0]
        run[1] = t
        run[2] += size if side == "buy" else 0.0
        run[3] += size if side == "sell" else 0.0
    return events + sum(close(run) for run in runs.values())


def divergence_loop(frame: pd.DataFrame) -> int:
    """Flags bar by bar; their number."""
    seen: dict[int, deque] = {}
    flags = 0
    columns = ("contract_id", "high", "low", "cumulative_delta")
    for c, high, low, delta in zip(*(frame[k].tolist() for k in columns), strict=True):
        past = seen.setdefault(c, deque(maxlen=LOOKBACK))
        if len(past) == LOOKBACK:
            top, bottom = max(p[0] for p in past), min(p[1] for p in past)
            dtop, dbottom = max(p[2] for p in past), min(p[2] for p in past)
            flags += (high > top and not delta > dtop) + (low < bottom and not delta < dbottom)
        past.append((high, low, delta))
    return flags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--loop-tiles", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sample = load_recorded(SAMPLE).ticks
    per_tile = int(sample["tick_type"].eq("last").sum())
    tiles = math.ceil(args.trades / per_tile)
    vb = float(sample["size"].sum()) / 100
    print(f"machine: {machine()}")
    print(f"rows per second, best of {args.repeat}; loop on {args.loop_tiles} copies, scaled")
    heads = {"contracts": 9, "rows": 10, "vectorised": 12, "loop": 10, "ratio": 7}
    print(f"{'function':22s} " + " ".join(f"{h:>{w}s}" for h, w in heads.items()))
    for contracts in (1, 4):
        ticks, small = tiled(sample, tiles, contracts), tiled(sample, args.loop_tiles, contracts)
        trades, few = classify(ticks), classify(small)
        per_second, few_bars = bars(trades, "1s"), bars(few, "1s")
        jobs = {
            "vpin bvc": (vpin, trades, (vb, WINDOW, "bvc"), vpin_loop, few, (vb, "bvc")),
            "vpin trades": (vpin, trades, (vb, WINDOW, "trades"), vpin_loop, few, (vb, "trades")),
            "microprice": (microprice, ticks, (), microprice_loop, small, ()),
            "quote_imbalance": (quote_imbalance, ticks, (), imbalance_loop, small, ()),
            "absorption": (partial(absorption, **ABSORB), trades, (), absorption_loop, few, ()),
            "delta_divergence": (
                delta_divergence,
                per_second,
                (LOOKBACK,),
                divergence_loop,
                few_bars,
                (),
            ),
        }
        for name, (fast, data, extra, slow, part, slow_extra) in jobs.items():
            runs = best(
                args.repeat,
                {"fast": partial(fast, data, *extra), "slow": partial(slow, part, *slow_extra)},
            )
            (t_fast, _), (t_slow, looped) = runs.values()
            _agree(name, fast(part, *extra), looped)
            rows = _rows(name, data)
            fast_rate, slow_rate = rows / t_fast, _rows(name, part) / t_slow
            print(
                f"{name:22s} {contracts:9d} {rows:10,d} {fast_rate:12,.0f} {slow_rate:10,.0f} "
                f"{fast_rate / slow_rate:6.1f}x"
            )


def _rows(name: str, data: pd.DataFrame) -> int:
    if name in ("microprice", "quote_imbalance"):
        return int(data["tick_type"].eq("bid_ask").sum())
    return len(data)


def _agree(name: str, fast: pd.DataFrame, looped: object) -> None:
    """The loop's answer must be the vectorised one on the same slice."""
    if name.startswith("vpin"):
        ok = len(looped) == len(fast) and np.allclose(
            fast["vpin"], looped, rtol=1e-9, atol=1e-12, equal_nan=True
        )
    elif name in ("microprice", "quote_imbalance"):
        column = "weighted_mid" if name == "microprice" else "imbalance"
        ok = np.allclose(fast[column], looped, rtol=1e-12, equal_nan=True)
    else:
        ok = len(fast) == looped
    if not ok:
        raise SystemExit(f"{name}: the loop and the vectorised function disagree")


if __name__ == "__main__":
    main()
