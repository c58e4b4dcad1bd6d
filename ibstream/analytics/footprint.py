"""Footprint: volume by price level and side within each time bar (long format)."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pandas as pd

from ibstream.analytics.imbalance import (
    DEFAULT_MIN_VOLUME,
    DEFAULT_RATIO,
    DEFAULT_STACKED,
    IMBALANCE_COLUMNS,
    check_imbalance_args,
    imbalances,
)
from ibstream.analytics.kernels import (
    TradeArrays,
    to_nanos,
    to_time_index,
    trade_arrays,
    typed_frame,
)
from ibstream.analytics.level_groups import level_groups

__all__ = ["FOOTPRINT_COLUMNS", "footprint", "price_levels"]

FOOTPRINT_COLUMNS = {
    "contract_id": "int64",
    "price": "float64",
    "buy_volume": "float64",
    "sell_volume": "float64",
    "neutral_volume": "float64",
    "delta": "float64",
    "trade_count": "int64",
} | IMBALANCE_COLUMNS  # the imbalance flags: see `imbalance.imbalances`
_SUMS = ("buy_volume", "sell_volume", "neutral_volume")
LevelState = dict[str, np.ndarray]


def footprint(
    trades: pd.DataFrame,
    interval: object = "1min",
    tick_size: float | None = None,
    *,
    ratio: float = DEFAULT_RATIO,
    min_volume: float = DEFAULT_MIN_VOLUME,
    stacked: int = DEFAULT_STACKED,
) -> pd.DataFrame:
    """One row per (bar, contract, price level) that traded, sorted by time, contract, price.

    Bars are those of `ibstream.analytics.bars.bars` (index `time` = bar start, UTC). With
    `tick_size`, prices are floored to multiples of it (`price` is the level's low edge);
    without, each contract's own `min_tick` from the frame's metadata
    (`trades.attrs["contracts"]`, carried from `collect` through `classify`) sets its grid,
    and a contract it does not describe has every traded price as its own level.
    delta = buy_volume - sell_volume. Trades without a price (NaN) have no level and are
    left out; bars still count them.
    The imbalance columns (buy_imbalance, sell_imbalance, stacked_buy, stacked_sell,
    unfinished_high, unfinished_low) flag diagonal imbalances of at least `ratio` to 1 with
    at least `min_volume` on the strong side, `stacked` or more of them on consecutive
    levels, and bars whose high or low traded on both sides: see `imbalance.imbalances`.
    """
    step = to_nanos(interval, "interval")
    check_imbalance_args(ratio, min_volume, stacked)
    arrays = trade_arrays(trades)
    if tick_size is None:
        tick_size = contract_ticks(getattr(trades, "attrs", {}), arrays.contract)
    cells = merge_levels(level_rows(arrays, step, tick_size))
    return finish_levels(cells, ratio, min_volume, stacked)


def contract_ticks(attrs: dict, contract: np.ndarray) -> float | np.ndarray | None:
    """Each row's `min_tick` from `attrs["contracts"]` (one number when all rows share it,
    NaN for a contract not described), or None when nothing is described."""
    ticks = {}
    for info in attrs.get("contracts") or ():
        tick = info.get("min_tick") if isinstance(info, dict) else None
        if isinstance(tick, int | float) and np.isfinite(tick) and tick > 0:
            ticks[info.get("contract_id")] = float(tick)
    if not ticks:
        return None
    ids = np.unique(contract)
    if len(ids) == 0:
        return None
    if len(ids) == 1 and int(ids[0]) in ticks:
        return ticks[int(ids[0])]
    return np.array([ticks.get(int(c), np.nan) for c in contract], dtype=np.float64)


def price_levels(price: np.ndarray, tick_size: float | np.ndarray | None) -> np.ndarray:
    """Prices floored to the tick grid (tolerant of float noise such as 100.07 / 0.01); a
    per-row array of tick sizes floors each row to its own (NaN: the price as it is)."""
    if tick_size is None:
        return price
    if isinstance(tick_size, np.ndarray):
        out = price.copy()
        for tick in np.unique(tick_size[~np.isnan(tick_size)]):
            rows = tick_size == tick
            out[rows] = price_levels(price[rows], float(tick))
        return out
    try:
        ok = float(tick_size) > 0 and np.isfinite(float(tick_size))
    except (TypeError, ValueError):
        ok = False
    if not ok or isinstance(tick_size, bool):
        raise ValueError(f"tick_size must be a positive number, got {tick_size!r}")
    places = max(0, -int(Decimal(str(tick_size)).normalize().as_tuple().exponent))
    steps = np.floor(np.round(price / tick_size, 6))
    return np.round(steps * tick_size, places)


def level_rows(
    a: TradeArrays,
    step: int,
    tick_size: float | np.ndarray | None,
    period: np.ndarray | None = None,
) -> LevelState:
    """Each trade with a price as a footprint cell of its own, in the layout `merge_levels`
    combines (a trade without a price has no level and is left out). `tick` is the cell's
    grid step (NaN: none), which the imbalances read. `period`: each trade's period start
    in place of its bar's (`step` is then not used)."""
    priced = ~np.isnan(a.price)
    grid = np.nan if tick_size is None else tick_size
    cells = {
        "time": a.time - a.time % step if period is None else period,
        "contract_id": a.contract,
        "price": price_levels(a.price, tick_size),
        "buy_volume": np.where(a.side == 0, a.size, 0.0),
        "sell_volume": np.where(a.side == 1, a.size, 0.0),
        "neutral_volume": np.where(a.side == 2, a.size, 0.0),
        "trade_count": np.ones(len(a.price), dtype=np.int64),
        "tick": np.broadcast_to(np.asarray(grid, dtype=np.float64), a.price.shape).copy(),
    }
    return cells if priced.all() else {k: v[priced] for k, v in cells.items()}


def merge_levels(rows: LevelState) -> LevelState:
    """Combine cells (earlier rows first) into one per (time, contract, price), sorted.

    `np.bincount` adds each row's weight to its group's total in row order, so a group's
    sum is the left-to-right sum of `running_sums` (a carried total continues it exactly),
    in one pass without sorting the rows."""
    codes, keys, first = level_groups(
        rows["time"], rows["contract_id"], rows["price"], rows["tick"]
    )
    size = len(first)
    out = dict(zip(("time", "contract_id", "price"), keys, strict=True))
    out |= {k: np.bincount(codes, rows[k], minlength=size) for k in _SUMS}
    count = rows["trade_count"]
    weights = None if not len(count) or (count == 1).all() else count
    out["trade_count"] = np.bincount(codes, weights, minlength=size).astype(np.int64)
    out["tick"] = rows["tick"][first]
    return out


def finish_levels(
    state: LevelState,
    ratio: float = DEFAULT_RATIO,
    min_volume: float = DEFAULT_MIN_VOLUME,
    stacked: int = DEFAULT_STACKED,
) -> pd.DataFrame:
    """Merged cells sorted by (time, contract, price) -> the footprint frame."""
    delta = state["buy_volume"] - state["sell_volume"]
    columns = dict(state) | {"delta": delta} | imbalances(state, ratio, min_volume, stacked)
    return typed_frame(columns, FOOTPRINT_COLUMNS, to_time_index(state["time"]))
