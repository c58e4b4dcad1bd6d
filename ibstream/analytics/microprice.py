"""Prices and pressure read off the top of the book: quote imbalance and the micro-price.

Both read the `bid_ask` rows of a tick frame (other rows are left out; a frame of quotes
without `tick_type` is read whole). An empty side (size 0, IB's way to say so; see
`quotes.quote_prices`) has no price, so the mid and micro-price of such a quote are NaN;
a missing size (NaN) makes the imbalance and the weighted mid NaN. Each output row depends
on its quote alone (and, for `method="stoikov"`, on a fitted table), so these functions are
their own incremental form: any split of the quotes gives the same rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ibstream.analytics.frame_kinds import expect_quotes
from ibstream.analytics.kernels import require_columns, typed_frame
from ibstream.analytics.quotes import quote_prices, tick_kinds
from ibstream.analytics.stoikov import STOIKOV_COLUMNS, lookup, stoikov_table

__all__ = [
    "MICROPRICE_COLUMNS",
    "MICROPRICE_METHODS",
    "QUOTE_IMBALANCE_COLUMNS",
    "microprice",
    "quote_imbalance",
]

QUOTE_COLUMNS = ("contract_id", "bid_price", "bid_size", "ask_price", "ask_size")
MICROPRICE_METHODS = ("weighted", "stoikov")
MICROPRICE_COLUMNS = {
    "contract_id": "int64",
    "bid_price": "float64",
    "ask_price": "float64",
    "mid": "float64",
    "imbalance": "float64",
    "weighted_mid": "float64",
    "microprice": "float64",
}
QUOTE_IMBALANCE_COLUMNS = {
    "contract_id": "int64",
    "bid_size": "float64",
    "ask_size": "float64",
    "imbalance": "float64",
}


def quote_imbalance(quotes: pd.DataFrame) -> pd.DataFrame:
    """Per quote, (bid_size - ask_size) / (bid_size + ask_size), in [-1, 1]: +1 only bids,
    -1 only offers; NaN when both sizes are 0 or one is missing. Index: the quotes'."""
    book = quote_book(quotes, "quote_imbalance")
    return typed_frame(book, QUOTE_IMBALANCE_COLUMNS, book["index"])


def microprice(
    quotes: pd.DataFrame,
    method: str = "weighted",
    table: pd.DataFrame | None = None,
    **fit: object,
) -> pd.DataFrame:
    """Per quote, the mid, the imbalance, the size-weighted mid and `microprice`.

    weighted_mid = (bid * ask_size + ask * bid_size) / (bid_size + ask_size): the price
    leans toward the side with less size, the one more likely to be taken out next.
    `method="weighted"`: microprice is the weighted mid. `method="stoikov"`: microprice is
    mid + G*(imbalance bucket, spread) of Stoikov (2018), from `table`
    (`ibstream.analytics.stoikov_table`, fitted on earlier quotes: what live use needs),
    else fitted on `quotes` themselves with the keyword arguments `fit` (in-sample); NaN
    where the table has no well-defined value (see `stoikov`).
    """
    if method not in MICROPRICE_METHODS:
        raise ValueError(f"method must be one of {', '.join(MICROPRICE_METHODS)}, got {method!r}")
    if fit and (method != "stoikov" or table is not None):
        raise ValueError("fit arguments (n_imbalance, n_spread, ...) go with method='stoikov' only")
    book = quote_book(quotes, "microprice")
    bid, ask = book["bid_price"], book["ask_price"]
    bid_size, ask_size = book["bid_size"], book["ask_size"]
    with np.errstate(divide="ignore", invalid="ignore"):
        weighted = (bid * ask_size + ask * bid_size) / (bid_size + ask_size)
    book |= {"mid": (bid + ask) / 2, "weighted_mid": weighted, "microprice": weighted}
    if method == "stoikov":
        if table is None:
            table = stoikov_table(quotes, **fit)
        elif not isinstance(table, pd.DataFrame) or not set(STOIKOV_COLUMNS) <= set(table):
            raise ValueError(
                "table must be a frame from ibstream.analytics.stoikov_table, got "
                f"{type(table).__name__}"
            )
        book["microprice"] = book["mid"] + lookup(table, book)
    return typed_frame(book, MICROPRICE_COLUMNS, book["index"])


def quote_book(quotes: object, call: str) -> dict:
    """The quote rows' columns as float arrays (an empty side's price NaN), their index, and
    the imbalance."""
    expect_quotes(quotes, call)
    require_columns(quotes, QUOTE_COLUMNS, "quotes")
    rows = slice(None)
    if "tick_type" in quotes.columns:  # the quote rows' columns only, not the whole frame
        rows = tick_kinds(quotes["tick_type"]).quote
    book = {k: quotes[k].to_numpy(dtype=np.float64, na_value=np.nan)[rows] for k in QUOTE_COLUMNS}
    book["contract_id"] = quotes["contract_id"].to_numpy(dtype=np.int64)[rows]
    for side in ("bid", "ask"):
        book[f"{side}_price"] = quote_prices(book[f"{side}_price"], book[f"{side}_size"])
    with np.errstate(divide="ignore", invalid="ignore"):
        total = book["bid_size"] + book["ask_size"]
        book["imbalance"] = np.where(
            total > 0, (book["bid_size"] - book["ask_size"]) / total, np.nan
        )
    book["index"] = quotes.index[rows]
    book["attrs"] = getattr(quotes, "attrs", {})
    return book
