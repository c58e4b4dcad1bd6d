"""Footprint imbalances: where one side overwhelmed the other on the diagonal, in stacks, and
the bars whose auction did not finish at their high or low.

Computed from a bar's finished cells (sorted by time, contract, price), so the batch
`footprint`, `DeltaEngine.footprint` and `LiveFootprint` share it and agree exactly. The
diagonal compares the aggressive buyers at price p with the aggressive sellers one tick
below (p - tick), as footprint platforms do: buyers lifting the offer at p against sellers
hitting the bid at p - tick, the two sides of the same quote.
"""

from __future__ import annotations

import numpy as np

IMBALANCE_COLUMNS = {
    "buy_imbalance": "bool",
    "sell_imbalance": "bool",
    "stacked_buy": "bool",
    "stacked_sell": "bool",
    "unfinished_high": "bool",
    "unfinished_low": "bool",
}
DEFAULT_RATIO, DEFAULT_MIN_VOLUME, DEFAULT_STACKED = 3.0, 0.0, 3


def check_imbalance_args(ratio: object, min_volume: object, stacked: object) -> None:
    """ValueError naming the argument that is not a usable threshold."""
    for name, value, low in (("ratio", ratio, 1.0), ("min_volume", min_volume, 0.0)):
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if not np.isfinite(value) or value < low:
            raise ValueError(f"{name} must be a finite number >= {low:g}, got {value!r}")
    if isinstance(stacked, bool) or not isinstance(stacked, int | np.integer) or stacked < 2:
        raise ValueError(f"stacked must be a number of levels >= 2, got {stacked!r}")


def imbalances(
    state: dict[str, np.ndarray],
    ratio: float = DEFAULT_RATIO,
    min_volume: float = DEFAULT_MIN_VOLUME,
    stacked: int = DEFAULT_STACKED,
) -> dict[str, np.ndarray]:
    """The IMBALANCE_COLUMNS of footprint cells sorted by (time, contract, price).

    buy_imbalance at p: buy_volume(p) > 0, >= min_volume and >= ratio * sell_volume(p - tick);
    sell_imbalance at p: sell_volume(p) > 0, >= min_volume and >= ratio * buy_volume(p + tick).
    A diagonal level inside the bar's range that did not trade counts as volume 0 (so the
    imbalance holds when min_volume is met); the bar's lowest level has no buy imbalance and
    its highest no sell imbalance (nothing traded beyond them to compare with). With no tick
    grid (`tick` NaN: no tick size known) the diagonal level is the next level that traded.
    stacked_buy / stacked_sell: the level is one of `stacked` or more buy (sell) imbalances
    on consecutive levels of the grid. unfinished_high / unfinished_low (the same on every
    row of a bar): the bar's highest (lowest) level traded on both sides, buy and sell > 0.
    """
    time, contract, price = state["time"], state["contract_id"], state["price"]
    buy, sell, tick = state["buy_volume"], state["sell_volume"], state["tick"]
    n = len(price)
    below = np.zeros(n, dtype=bool)  # the row before is a lower level of the same bar
    below[1:] = (time[1:] == time[:-1]) & (contract[1:] == contract[:-1])
    with np.errstate(invalid="ignore", divide="ignore"):
        steps = np.round(price / tick)
    next_to = below.copy()  # ... and the level right below on the grid
    next_to[1:] &= np.isnan(tick[1:]) | (steps[1:] - steps[:-1] == 1)
    above, next_above = np.append(below[1:], False), np.append(next_to[1:], False)
    sell_below = np.where(next_to, np.roll(sell, 1), 0.0)
    buy_above = np.where(next_above, np.roll(buy, -1), 0.0)
    buy_imb = below & (buy > 0) & (buy >= min_volume) & (buy >= ratio * sell_below)
    sell_imb = above & (sell > 0) & (sell >= min_volume) & (sell >= ratio * buy_above)
    first = ~below  # each bar's lowest level
    bar = np.cumsum(first) - 1
    both = (buy > 0) & (sell > 0)
    return {
        "buy_imbalance": buy_imb,
        "sell_imbalance": sell_imb,
        "stacked_buy": _in_runs(buy_imb, next_to, stacked),
        "stacked_sell": _in_runs(sell_imb, next_to, stacked),
        "unfinished_high": both[~above][bar] if n else both,
        "unfinished_low": both[first][bar] if n else both,
    }


def _in_runs(flag: np.ndarray, linked: np.ndarray, length: int) -> np.ndarray:
    """Per row, whether it is in a run of `length` or more flagged rows, each linked to the
    row before it."""
    cont = np.zeros(len(flag), dtype=bool)
    cont[1:] = flag[1:] & flag[:-1] & linked[1:]
    run = np.cumsum(~cont) - 1
    return flag & (np.bincount(run, minlength=1)[run] >= length) if len(flag) else flag
