"""What IB's one-second history times cost trade classification, per tie-break.

    python -m bench.history_order [--data DIR] [--clock receive|exchange]

Data: the recorded data sets with the true aggressor of every trade (`ibstream.datasets`:
`--data`, else $IBSTREAM_DATA, else the samples shipped in the package; the same two sets as
the repository's shared data). For each set it classifies the ticks as recorded (full
resolution, arrival order), then truncates every time to the second, as IB's history does,
splits quotes and trades back into their own streams (each keeps its recorded order) and
merges them again with `merge_history` under each tie-break. It prints, per data set, method
and tie-break, the accuracy on the scored trades (the quote window for the quote-based
methods, every trade for the tick test, as docs/classification.md scores them), the loss in
percentage points against full resolution, and how often a trade meets the same prevailing
quote as at full resolution. The chosen tie-break is the one with the best mean accuracy
over all methods and data sets (ties: the fewest points lost at worst).
"""

from __future__ import annotations

import argparse
import os
import platform
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ibstream.analytics import METHODS, classify
from ibstream.datasets import DATA_ENV, Recorded, load_recorded, recorded_names
from ibstream.history.merge import DEFAULT_TIE_BREAK, SECOND, TIE_BREAKS, merge_history

FULL = "full resolution"


@dataclass(frozen=True)
class Row:
    data: str
    method: str
    order: str  # FULL or a tie-break
    trades: int
    accuracy: float
    same_quote: float  # share of scored trades meeting the full-resolution prevailing quote


def truncated(recorded: Recorded, tie_break: str) -> pd.DataFrame:
    """The recorded ticks as IB's history would give them, merged again by `tie_break`."""
    ticks = recorded.ticks
    stamps = ticks.index.asi8
    seconds = pd.to_datetime(stamps - stamps % SECOND, utc=True)
    frame = ticks.assign(ib_time=seconds).reset_index(drop=True)
    is_quote = (frame["tick_type"] == "bid_ask").to_numpy()
    return merge_history(quotes=frame[is_quote], trades=frame[~is_quote], tie_break=tie_break)


def prevailing_quotes(ticks: pd.DataFrame) -> np.ndarray:
    """Per trade row, the number of the quote prevailing for it (-1: none), quotes numbered
    in their own stream order (the same at any resolution)."""
    is_quote = (ticks["tick_type"] == "bid_ask").to_numpy()
    number = np.cumsum(is_quote) - 1
    return number[~is_quote]


def measure(recorded: Recorded) -> list[Row]:
    """Rows for one data set: full resolution, then each tie-break."""
    orders = {FULL: recorded.ticks} | {t: truncated(recorded, t) for t in TIE_BREAKS}
    truth_quote = prevailing_quotes(recorded.ticks)
    rows = []
    for method in METHODS:
        quoted_only = method != "tick"
        keep = recorded.quoted.to_numpy() if quoted_only else np.ones(len(truth_quote), bool)
        for order, ticks in orders.items():
            score = recorded.score(classify(ticks, method), quoted_only=quoted_only)
            same = float((prevailing_quotes(ticks) == truth_quote)[keep].mean())
            rows.append(Row(recorded.name, method, order, score.trades, score.accuracy, same))
    return rows


def chosen(rows: list[Row]) -> str:
    """The tie-break with the best mean accuracy (ties: the smallest worst loss)."""
    full = {(r.data, r.method): r.accuracy for r in rows if r.order == FULL}

    def key(tie_break: str) -> tuple[float, float]:
        mine = [r for r in rows if r.order == tie_break]
        worst = max(full[r.data, r.method] - r.accuracy for r in mine)
        return (-float(np.mean([r.accuracy for r in mine])), worst)

    return min(TIE_BREAKS, key=key)


def table(rows: list[Row]) -> str:
    """One line per data set and method: accuracy at full resolution, then per tie-break the
    accuracy after truncation with the loss in percentage points."""
    orders = (FULL, *TIE_BREAKS)
    cells = {(r.data, r.method, r.order): r for r in rows}
    lines = [
        "| data set | method | trades | " + " | ".join(orders) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in orders) + " |",
    ]
    for data, method in dict.fromkeys((r.data, r.method) for r in rows):
        full = cells[data, method, FULL].accuracy
        line = [data, f"`{method}`", f"{cells[data, method, FULL].trades:,}", f"{100 * full:.2f} %"]
        for order in TIE_BREAKS:
            accuracy = cells[data, method, order].accuracy
            line.append(f"{100 * accuracy:.2f} % ({100 * (accuracy - full):+.2f})")
        lines.append("| " + " | ".join(line) + " |")
    same = [
        f"{data}: " + ", ".join(
            f"{o} {100 * cells[data, 'lee_ready', o].same_quote:.1f} %" for o in TIE_BREAKS
        )
        for data in dict.fromkeys(r.data for r in rows)
    ]  # fmt: skip
    means = ", ".join(
        f"{o} {100 * np.mean([r.accuracy for r in rows if r.order == o]):.2f} %" for o in orders
    )
    return "\n".join(
        [*lines, "", "trades meeting their full-resolution quote (quote window):", *same, "",
         f"mean accuracy over methods and data sets: {means}"]
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", help=f"a directory of data sets (default: ${DATA_ENV} or the samples)"
    )
    parser.add_argument("--clock", default="receive", choices=("receive", "exchange"))
    args = parser.parse_args(argv)
    if args.data:
        os.environ[DATA_ENV] = args.data
    rows = [r for name in recorded_names() for r in measure(load_recorded(name, args.clock))]
    print(
        f"one-second history order vs full resolution; data: {', '.join(recorded_names())} "
        f"({os.environ.get(DATA_ENV, 'bundled samples')}), clock {args.clock}; "
        f"{platform.machine()} ({os.cpu_count()} cores), Python {platform.python_version()}, "
        f"pandas {pd.__version__}"
    )
    print(table(rows))
    best = chosen(rows)
    print(f"\nbest mean accuracy: {best}; merge_history default: {DEFAULT_TIE_BREAK}")


if __name__ == "__main__":
    main()
