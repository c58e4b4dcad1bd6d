"""Delta: signed volume, cumulative delta, rolling pressure and the delta study totals.

Every sum here is a plain left-to-right float sum in arrival order (`np.cumsum`), per contract.
That choice makes the incremental `DeltaEngine` equal these batch functions bit for bit: a
running total carried from one batch and continued over the next gives the same bits as one
pass. The cumulative delta is the running sum of signed volume (one cumsum, no sort for one
contract); the net delta of a summary, window or bar is `buy - sell` of its buy and sell
sums. Both are exact for whole sizes; for fractional sizes they may differ in the last bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ibstream.analytics.grouping import (
    goes_back,
    group_rows,
    grouped_cumsum,
    previous_in_group,
    running_sums,
)
from ibstream.analytics.kernels import to_nanos, trade_arrays, typed_frame

__all__ = [
    "ROLLING_COLUMNS",
    "SUMMARY_COLUMNS",
    "DeltaSummary",
    "cumulative_delta",
    "rolling",
    "signed_volume",
    "summary",
]

ROLLING_COLUMNS = {
    "contract_id": "int64",
    "buy_volume": "float64",
    "sell_volume": "float64",
    "neutral_volume": "float64",
    "net_delta": "float64",
    "buy_sell_ratio": "float64",
    "buy_pct": "float64",
    "trade_count": "int64",
}
SUMMARY_COLUMNS = {
    "total_trades": "int64",
    "buy_volume": "float64",
    "sell_volume": "float64",
    "neutral_volume": "float64",
    "net_delta": "float64",
    "buy_pct": "float64",
    "buy_sell_ratio": "float64",
}


def signed_volume(trades: pd.DataFrame) -> pd.Series:
    """Buy +size, sell -size, neutral 0, aligned with `trades`."""
    signed = trade_arrays(trades).signed()
    return pd.Series(signed, index=trades.index, name="signed_volume", copy=False)


def cumulative_delta(trades: pd.DataFrame) -> pd.Series:
    """The running sum of signed volume per contract, aligned with `trades`."""
    a = trade_arrays(trades)
    total = grouped_cumsum(a.signed(), a.contract)
    return pd.Series(total, index=trades.index, name="cumulative_delta", copy=False)


def rolling(trades: pd.DataFrame, window: object = "60s") -> pd.DataFrame:
    """Per trade, the pressure of its contract's trades in the time window (t - window, t].

    As pandas' time-based `rolling`: a trade's window holds it and the earlier trades of its
    contract within `window`, never later ones at the same time. Needs non-decreasing times
    within each contract. `buy_sell_ratio` = buy / sell is inf when only buys and NaN when
    neither; `buy_pct` = 100 * buy / (buy + sell) is NaN when neither. Window sums are
    differences of the contract's running totals: exact for whole sizes, else within float
    rounding of the running total (about 1e-16 of it); an empty side is exactly 0.
    """
    span = to_nanos(window, "window")
    a = trade_arrays(trades)
    groups = group_rows(a.contract)
    upto = running_sums(a.flows(), groups)
    before = previous_in_group(upto, groups)
    stats = window_stats(a.time, a.contract, upto, before, span)
    return rolling_frame(trades.index, a.contract, stats)


def window_stats(
    time: np.ndarray, contract: np.ndarray, upto: np.ndarray, before: np.ndarray, span: int
) -> np.ndarray:
    """Window totals (buy, sell, neutral, count) per row from running sums including the row
    (`upto`) and excluding it (`before`): upto[i] - before[first row of i's window]."""
    start = np.empty(len(time), dtype=np.int64)
    g = group_rows(contract)
    back = g.order[goes_back(time, g)[g.order]]  # by contract, then arrival
    if len(back):
        at = pd.Timestamp(int(time[back[0]]), tz="UTC")
        raise ValueError(
            "rolling needs non-decreasing trade times within a contract; contract "
            f"{contract[back[0]]} goes back in time at {at}"
        )
    for rows in g.members():
        times = time[rows]
        start[rows] = rows[np.searchsorted(times, times - span, side="right")]
    return upto - before[start]


def rolling_frame(index: pd.Index, contract: np.ndarray, stats: np.ndarray) -> pd.DataFrame:
    buy, sell, neutral, count = stats.T
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = buy / sell
        pct = 100.0 * buy / (buy + sell)
    columns = {
        "contract_id": contract,
        "buy_volume": buy,
        "sell_volume": sell,
        "neutral_volume": neutral,
        "net_delta": buy - sell,
        "buy_sell_ratio": ratio,
        "buy_pct": pct,
        "trade_count": count,
    }
    return typed_frame(columns, ROLLING_COLUMNS, index)


def summary(trades: pd.DataFrame) -> pd.DataFrame:
    """The delta study per contract (index `contract_id`): totals, net delta, buy % (rounded
    to 2 places, NaN when no buy or sell volume) and buy / sell ratio (inf / NaN as in
    `rolling`)."""
    a = trade_arrays(trades)
    groups = group_rows(a.contract)
    totals = running_sums(a.flows(), groups)[groups.last]
    return summary_frame(groups.keys[0], totals)


def summary_frame(contract: np.ndarray, totals: np.ndarray) -> pd.DataFrame:
    buy, sell, neutral, count = totals.T if len(totals) else np.empty((4, 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = buy / sell
        pct = np.round(100.0 * buy / (buy + sell), 2)
    columns = {
        "total_trades": count,
        "buy_volume": buy,
        "sell_volume": sell,
        "neutral_volume": neutral,
        "net_delta": buy - sell,
        "buy_pct": pct,
        "buy_sell_ratio": ratio,
    }
    index = pd.Index(np.asarray(contract, dtype=np.int64), name="contract_id")
    return typed_frame(columns, SUMMARY_COLUMNS, index)


@dataclass(frozen=True)
class DeltaSummary:
    """One contract's delta study as `ibstream demo --json` prints it."""

    total_trades: int = 0
    buy_volume: float = 0.0
    sell_volume: float = 0.0
    neutral_volume: float = 0.0

    @classmethod
    def from_summary(cls, frame: pd.DataFrame, contract_id: int | None = None) -> DeltaSummary:
        """The row of `contract_id` in a `summary()` frame (the only row if None; zeros if
        the contract has no trades)."""
        if contract_id is None:
            if len(frame) > 1:
                raise ValueError(
                    f"summary has {len(frame)} contracts {list(frame.index)}; pass contract_id"
                )
            contract_id = frame.index[0] if len(frame) else None
        if contract_id is None or contract_id not in frame.index:
            return cls()
        row = frame.loc[contract_id]
        return cls(
            int(row["total_trades"]),
            float(row["buy_volume"]),
            float(row["sell_volume"]),
            float(row["neutral_volume"]),
        )

    @property
    def net_delta(self) -> float:
        return self.buy_volume - self.sell_volume

    @property
    def buy_pct(self) -> float:
        """Buy volume in % of buy + sell volume, rounded to 2 places; 0.0 when neither."""
        both = self.buy_volume + self.sell_volume
        return round(100.0 * self.buy_volume / both, 2) if both else 0.0

    def to_dict(self, full: bool = False) -> dict:
        """The five keys the demo prints; `full` adds neutral volume and the buy / sell ratio
        (None when there is no sell volume)."""
        out = {
            "total_trades": self.total_trades,
            "buy_volume": _num(self.buy_volume),
            "sell_volume": _num(self.sell_volume),
            "net_delta": _num(self.net_delta),
            "buy_pct": self.buy_pct,
        }
        if full:
            ratio = self.buy_volume / self.sell_volume if self.sell_volume else math.nan
            out["neutral_volume"] = _num(self.neutral_volume)
            out["buy_sell_ratio"] = round(ratio, 8) if math.isfinite(ratio) else None
        return out


def _num(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(value, 8)
