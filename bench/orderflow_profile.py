"""Volume profile and footprint with imbalances, trades per second: the vectorised
`volume_profile` and `footprint` beside a per-trade Python loop of the same definitions
(`bench.orderflow_loops`), in one run.

    python -m bench.orderflow_profile [--trades 1000000] [--loop-trades 100000] [--repeat 5]

Data: the recorded Binance BTCUSDT sample classified (Lee-Ready) and tiled as in
`bench.classify` until it holds `--trades` trades, on one contract and dealt to four.
Levels are 1.0 USDT (the sample's 0.01 tick would make nearly every trade its own level);
profile periods 30 minutes, footprint bars 1 minute. The loop runs on the first
`--loop-trades` trades (its cost is linear in trades, so its rate is that of the whole)
and must agree with the vectorised result there: POC, value area and volume per period,
buy and sell volume and every imbalance flag per cell, exactly. Figures are the best of
`--repeat` interleaved runs; only the ratios, measured in the same run, mean much on a
shared machine. The goal: 20 times the loop.
"""

from __future__ import annotations

import argparse
import math
from functools import partial

import pandas as pd

from bench.classify import SAMPLE, best, machine, tiled
from bench.orderflow_loops import as_cells, footprint_loop, profile_loop, rows_of
from ibstream.analytics import IMBALANCE_COLUMNS, classify, footprint, volume_profile
from ibstream.datasets import load_recorded

TICK, PERIOD, BAR = 1.0, "30min", "1min"


def loop_profile(trades: pd.DataFrame) -> dict:
    return profile_loop(rows_of(trades), pd.Timedelta(PERIOD).value, TICK, 0.70)


def loop_footprint(trades: pd.DataFrame) -> dict:
    return footprint_loop(rows_of(trades), pd.Timedelta(BAR).value, TICK, 3.0, 0.0, 3)


def check(small: pd.DataFrame, profile: dict, cells: dict) -> None:
    """The loop's results on `small` equal the vectorised ones, else exit."""
    periods = volume_profile(small, PERIOD, TICK).periods
    keys = zip(periods.index.asi8.tolist(), periods["contract_id"].tolist(), strict=True)
    columns = ["poc", "value_area_low", "value_area_high", "volume"]
    got = dict(zip(keys, periods[columns].itertuples(index=False, name=None), strict=True))
    if got != profile:
        raise SystemExit("loop and volume_profile disagree")
    flags = ["buy_volume", "sell_volume", *IMBALANCE_COLUMNS]
    if as_cells(footprint(small, BAR, TICK), flags) != cells:
        raise SystemExit("loop and footprint disagree")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--loop-trades", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sample = load_recorded(SAMPLE).ticks
    tiles = math.ceil(args.trades / int(sample["tick_type"].eq("last").sum()))
    print(f"machine: {machine()}")
    print(
        f"trades per second, best of {args.repeat}; the loop on the first "
        f"{args.loop_trades:,} trades; ratio: vectorised over loop (goal 20x)"
    )
    print(
        f"{'function':22s} {'contracts':>9s} {'trades':>10s} {'vectorised':>12s} "
        f"{'loop':>10s} {'ratio':>7s}"
    )
    for contracts in (1, 4):
        trades = classify(tiled(sample, tiles, contracts)).iloc[: args.trades]
        small = trades.iloc[: args.loop_trades]
        runs = best(
            args.repeat,
            {
                "profile": partial(volume_profile, trades, PERIOD, TICK),
                "profile loop": partial(loop_profile, small),
                "footprint": partial(footprint, trades, BAR, TICK),
                "footprint loop": partial(loop_footprint, small),
            },
        )
        check(small, runs["profile loop"][1], runs["footprint loop"][1])
        for name in ("profile", "footprint"):
            fast = len(trades) / runs[name][0]
            slow = len(small) / runs[f"{name} loop"][0]
            label = f"{name} ({PERIOD if name == 'profile' else BAR})"
            print(
                f"{label:22s} {contracts:9d} {len(trades):10,d} {fast:12,.0f} "
                f"{slow:10,.0f} {fast / slow:6.1f}x  {'met' if fast / slow >= 20 else 'not met'}"
            )


if __name__ == "__main__":
    main()
