"""What the analytics read from tick rows: which are quotes and which trades, and the one
rule for an empty quote side.

IB's tick-by-tick BidAsk reports a side without orders as size 0 (with price 0 or -1); a
missing value is NaN. Prices themselves may be negative or zero (CL in April 2020,
calendar spreads), so a price never makes a side empty. Classification and order-flow
imbalance both read quotes through `quote_prices`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from ibstream.errors import StreamError
from ibstream.model import TickType


class TickKinds(NamedTuple):
    """Per row: a quote (bid_ask), a trade (last or all_last), an all_last trade."""

    quote: np.ndarray
    trade: np.ndarray
    all_last: np.ndarray


def tick_kinds(tick_type: pd.Series) -> TickKinds:
    """The kind of each row, for any spelling `TickType.parse` accepts (`bid_ask`, `BidAsk`,
    ...); other tick types are neither quote nor trade."""
    if isinstance(tick_type.dtype, pd.CategoricalDtype):
        codes, names = tick_type.cat.codes.to_numpy(), tick_type.cat.categories
    else:
        codes, names = pd.factorize(tick_type)
    found: dict[str, list[int]] = {"quote": [], "trade": [], "all_last": []}
    for i, name in enumerate(names):
        parsed = tick_type_of(name)
        if parsed is TickType.BID_ASK:
            found["quote"].append(i)
        elif parsed in (TickType.LAST, TickType.ALL_LAST):
            found["trade"].append(i)
            if parsed is TickType.ALL_LAST:
                found["all_last"].append(i)
    return TickKinds(*(_rows_of(codes, found[kind]) for kind in TickKinds._fields))


def _rows_of(codes: np.ndarray, wanted: list[int]) -> np.ndarray:
    """Whether each row's code is one of `wanted`: one comparison for one code, an or of
    whole arrays for more (a masked store would branch on every row)."""
    if not wanted:
        return np.zeros(len(codes), dtype=bool)
    kind = codes == wanted[0]
    for code in wanted[1:]:
        np.logical_or(kind, codes == code, out=kind)
    return kind


def tick_type_of(name: object) -> TickType | None:
    """The tick type of a name in any accepted spelling; None for anything else."""
    try:
        return TickType.parse(name)
    except StreamError:
        return None


def quote_prices(price: np.ndarray, size: np.ndarray) -> np.ndarray:
    """One side's prices, NaN where the side is empty: size 0 (IB's empty side) or no
    price. A missing size (NaN, or no size column) leaves the price standing."""
    empty = size == 0
    return np.where(empty, np.nan, price) if empty.any() else price


def quote_price(price: float, size: float) -> float:
    """`quote_prices` of one row (the live path's scalar form of the same rule)."""
    return np.nan if size == 0 else price
