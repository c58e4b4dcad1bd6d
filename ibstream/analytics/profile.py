"""Volume profile: volume by price level and side per period, its point of control (POC),
value area and the naked POCs (those price has not come back to since).

Levels are those of `footprint` (the same grid, sums and rules for missing values); the
POC and value area are `auction.auction` (the standard expansion, ties documented there).
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

import numpy as np
import pandas as pd

from ibstream.analytics.auction import auction
from ibstream.analytics.footprint import contract_ticks, level_rows, merge_levels
from ibstream.analytics.grouping import Groups, group_rows, running_sums
from ibstream.analytics.kernels import (
    TradeArrays,
    to_nanos,
    to_time_index,
    trade_arrays,
    typed_frame,
)

__all__ = [
    "PROFILE_LEVEL_COLUMNS",
    "PROFILE_PERIOD_COLUMNS",
    "VolumeProfile",
    "value_area",
    "volume_profile",
]

_VOLUMES = {
    "volume": "float64",
    "buy_volume": "float64",
    "sell_volume": "float64",
    "neutral_volume": "float64",
    "delta": "float64",
    "trade_count": "int64",
}
PROFILE_LEVEL_COLUMNS = (
    {"contract_id": "int64", "price": "float64"} | _VOLUMES | {"in_value_area": "bool"}
)
PROFILE_PERIOD_COLUMNS = (
    {"contract_id": "int64", "low": "float64", "high": "float64"}
    | _VOLUMES
    | {
        "poc": "float64",
        "poc_volume": "float64",
        "value_area_low": "float64",
        "value_area_high": "float64",
        "value_area_volume": "float64",
        "poc_naked": "bool",
        "poc_revisited": "datetime64[ns, UTC]",
    }
)
_SUMS = ("buy_volume", "sell_volume", "neutral_volume")


class VolumeProfile(NamedTuple):
    """`levels`: one row per (period, contract, price level) that traded; `periods`: one
    row per (period, contract). Both indexed by `time`, the period's start (UTC)."""

    levels: pd.DataFrame
    periods: pd.DataFrame


def value_area(
    prices: np.ndarray, volumes: np.ndarray, fraction: float = 0.70
) -> tuple[float, float, float]:
    """(poc, value_area_low, value_area_high) of one period's levels, `prices` strictly
    ascending (each level counts as a level of the expansion, so pass levels without volume
    too if they should count); NaN volume counts as 0; a NaN triple when there is no volume."""
    fraction = check_fraction(fraction, "fraction")
    price = np.asarray(prices, dtype=np.float64).ravel()
    volume = np.nan_to_num(np.asarray(volumes, dtype=np.float64).ravel(), nan=0.0)
    if price.shape != volume.shape:
        raise ValueError(f"prices and volumes differ in length: {len(price)} and {len(volume)}")
    if np.isnan(price).any() or (np.diff(price) <= 0).any():
        raise ValueError("prices must be strictly ascending numbers (one per level)")
    if (volume < 0).any() or np.isinf(volume).any():
        raise ValueError("volumes must be finite and not negative")
    if not len(price):
        return (np.nan, np.nan, np.nan)
    a = auction(np.zeros(1, dtype=np.int64), price, volume, fraction)
    return (float(a.poc[0]), float(a.low[0]), float(a.high[0]))


def volume_profile(
    trades: pd.DataFrame,
    by: object = None,
    tick_size: float | None = None,
    value_area: float = 0.70,
) -> VolumeProfile:
    """Volume profile of classified trades (`classify`'s output) per period and contract.

    `by`: None (the whole frame is one period per contract, labelled by its first trade's
    time), a duration such as "30min" or "1D" (epoch-aligned UTC periods, as `bars`), or a
    frame with a DatetimeIndex such as `bars(trades, "1h")` or a DatetimeIndex (its times
    are the period starts; a trade belongs to the last start at or before it, trades before
    the first are left out). Levels as `footprint` (`tick_size`, else each contract's
    `min_tick`); volume = buy + sell + neutral; a trade without a price has no level, one
    without a size volume 0. `value_area`: the fraction of a period's volume its value area
    holds (0 < value_area <= 1). A period's POC is naked while no later period of its
    contract traded through it (its low <= POC <= its high); `poc_revisited` is the start of
    the first that did (NaT while naked). The newest period's POC is naked by definition.
    """
    fraction = check_fraction(value_area, "value_area")
    cells, starts = profile_cells(trades, by, tick_size)
    return finish_profile(merge_levels(cells), fraction, starts)


def profile_cells(
    trades: pd.DataFrame, by: object, tick_size: float | None
) -> tuple[dict[str, np.ndarray], dict[int, int] | None]:
    """Each priced trade of a period as a level of its own (`merge_levels` combines them,
    `time` being the period) and, for `by=None`, each contract's first trade time."""
    arrays = trade_arrays(trades)
    if tick_size is None:
        tick_size = contract_ticks(getattr(trades, "attrs", {}), arrays.contract)
    keys, kept = period_keys(arrays, by)
    cells = level_rows(arrays, 1, tick_size, keys)
    priced = ~np.isnan(arrays.price)
    if not kept.all():
        cells = {k: v[kept[priced]] for k, v in cells.items()}
    return cells, first_times(arrays, priced & kept) if by is None else None


def check_fraction(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise ValueError(f"{name} must be a fraction in (0, 1], got {value!r}")
    if not 0 < float(value) <= 1:
        raise ValueError(f"{name} must be a fraction in (0, 1], got {value!r}")
    return float(value)


def period_keys(a: TradeArrays, by: object) -> tuple[np.ndarray, np.ndarray]:
    """Per trade its period (start in ns; 0 for `by=None`) and whether it is in one."""
    time = a.time
    if by is None:
        return np.zeros(len(time), dtype=np.int64), np.ones(len(a.time), dtype=bool)
    if isinstance(by, pd.DataFrame):
        by = by.index
    if isinstance(by, pd.DatetimeIndex):
        index = by.tz_localize("UTC") if by.tz is None else by.tz_convert("UTC")
        bounds = np.unique(index.as_unit("ns").asi8)
        at = np.searchsorted(bounds, a.time, side="right") - 1
        kept = at >= 0
        if not len(bounds):
            return np.zeros(len(time), dtype=np.int64), kept
        return bounds[np.maximum(at, 0)], kept
    if not isinstance(by, str | pd.Timedelta | dt.timedelta | np.timedelta64):
        raise ValueError(f"by must be None, a duration or a frame of periods, got {by!r}")
    step = to_nanos(by, "by")
    return time - time % step, np.ones(len(a.time), dtype=bool)


def first_times(a: TradeArrays, rows: np.ndarray) -> dict[int, int]:
    """Per contract, the time of its first trade among `rows` (ns)."""
    if not rows.any():
        return {}
    g = group_rows(a.contract[rows])
    return dict(zip(g.keys[0].tolist(), g.reduce(np.minimum, a.time[rows]).tolist(), strict=True))


def finish_profile(
    state: dict[str, np.ndarray], fraction: float, starts: dict[int, int] | None
) -> VolumeProfile:
    """Merged levels sorted by (period, contract, price) -> the profile frames; `starts`:
    the period label per contract when the whole frame is one period."""
    time, contract = state["time"], state["contract_id"]
    if starts is not None and len(time):
        time = np.array([starts[c] for c in contract.tolist()], dtype=np.int64)
    n = len(time)
    new = np.ones(n, dtype=bool)
    new[1:] = (time[1:] != time[:-1]) | (contract[1:] != contract[:-1])
    begins = np.flatnonzero(new)
    volume = state["buy_volume"] + state["sell_volume"] + state["neutral_volume"]
    a = auction(begins, state["price"], volume, fraction)
    levels = dict(state) | {
        "volume": volume,
        "delta": state["buy_volume"] - state["sell_volume"],
        "in_value_area": a.inside,
    }
    ends = np.append(begins[1:], n)[: len(begins)] - 1
    sums = np.column_stack([state[k] for k in _SUMS])
    if n:
        sums = running_sums(sums, Groups((begins,), np.arange(n), begins))[ends]
    periods = {
        "contract_id": contract[begins],
        "low": state["price"][begins],
        "high": state["price"][ends],
        "volume": a.total,
        "trade_count": np.add.reduceat(state["trade_count"], begins) if n else begins,
        "poc": a.poc,
        "poc_volume": a.poc_volume,
        "value_area_low": a.low,
        "value_area_high": a.high,
        "value_area_volume": a.volume,
    } | {k: sums[:, i] for i, k in enumerate(_SUMS)}
    periods["delta"] = periods["buy_volume"] - periods["sell_volume"]
    revisited = revisits(periods)
    periods["poc_naked"] = ~np.isnan(periods["poc"]) & (revisited < 0)
    stamps = np.where(revisited < 0, _NAT, time[begins][revisited])
    plain = {k: t for k, t in PROFILE_PERIOD_COLUMNS.items() if k != "poc_revisited"}
    frame = typed_frame(periods, plain, to_time_index(time[begins]))
    frame["poc_revisited"] = to_time_index(stamps).array  # NaT: not revisited
    return VolumeProfile(typed_frame(levels, PROFILE_LEVEL_COLUMNS, to_time_index(time)), frame)


def revisits(periods: dict[str, np.ndarray]) -> np.ndarray:
    """Per period, the row of the first later period of its contract whose range holds its
    POC (-1: none). Periods come sorted by (start, contract)."""
    out = np.full(len(periods["poc"]), -1, dtype=np.int64)
    contract, poc = periods["contract_id"], periods["poc"]
    low, high = periods["low"], periods["high"]
    for rows in group_rows(contract).members() if len(contract) else ():
        block = max(1, _CELLS // len(rows))  # rows of the comparison matrix at a time
        for at in range(0, len(rows), block):
            mine = rows[at : at + block]
            later = np.arange(len(rows))[None, :] > np.arange(at, at + len(mine))[:, None]
            hit = later & (low[rows][None, :] <= poc[mine][:, None])
            hit &= poc[mine][:, None] <= high[rows][None, :]
            found = hit.any(axis=1)
            out[mine[found]] = rows[hit[found].argmax(axis=1)]
    return out


_NAT = np.iinfo(np.int64).min
_CELLS = 1 << 22  # booleans per block of the naked-POC comparison
