"""Order-flow imbalance from top-of-book changes (Cont, Kukanov & Stoikov 2014)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ibstream.analytics.grouping import group_rows, previous_in_group
from ibstream.analytics.kernels import require_columns, to_nanos, to_time_index, utc_nanos
from ibstream.analytics.quotes import quote_prices, tick_kinds

__all__ = ["OFI_BAR_COLUMNS", "OFI_COLUMNS", "order_flow_imbalance"]

QUOTE_COLUMNS = ("contract_id", "tick_type", "bid_price", "bid_size", "ask_price", "ask_size")
OFI_COLUMNS = {"contract_id": "int64", "ofi": "float64"}
OFI_BAR_COLUMNS = {"contract_id": "int64", "ofi": "float64", "quote_count": "int64"}


def order_flow_imbalance(ticks: pd.DataFrame, interval: object = None) -> pd.DataFrame:
    """Per `bid_ask` tick, the order-flow imbalance e_n against the contract's previous quote:

        e_n = 1{Pb_n >= Pb_n-1} qb_n - 1{Pb_n <= Pb_n-1} qb_n-1
              - 1{Pa_n <= Pa_n-1} qa_n + 1{Pa_n >= Pa_n-1} qa_n-1

    (NaN for a contract's first quote). A missing price compares false, and an empty side
    (size 0, IB's way to say so; see `quotes.quote_prices`) has no price, so a side that
    empties or refills adds nothing rather than a spike of its whole size; prices may be
    negative. Rows keep the ticks' index and order. With `interval`, e_n is summed per bar and contract instead (bars as in
    `ibstream.analytics.bars`, empty ones omitted; `quote_count` counts the bar's quotes).
    """
    require_columns(ticks, QUOTE_COLUMNS, "ticks")
    step = None if interval is None else to_nanos(interval, "interval")
    quotes = ticks.loc[tick_kinds(ticks["tick_type"])[0]]  # any spelling: bid_ask, BidAsk
    contract = quotes["contract_id"].to_numpy(dtype=np.int64)
    book = {
        k: quotes[k].to_numpy(dtype=np.float64, na_value=np.nan)
        for k in ("bid_price", "bid_size", "ask_price", "ask_size")
    }
    for side in ("bid", "ask"):  # an empty side has no price (the classification's rule)
        book[f"{side}_price"] = quote_prices(book[f"{side}_price"], book[f"{side}_size"])
    g = group_rows(contract)
    before = {k: previous_in_group(v, g, np.nan) for k, v in book.items()}
    bid, ask = book["bid_price"], book["ask_price"]
    bid_was, ask_was = before["bid_price"], before["ask_price"]
    ofi = (
        np.where(bid >= bid_was, book["bid_size"], 0.0)
        - np.where(bid <= bid_was, before["bid_size"], 0.0)
        - np.where(ask <= ask_was, book["ask_size"], 0.0)
        + np.where(ask >= ask_was, before["ask_size"], 0.0)
    )
    ofi[g.first] = np.nan
    if step is None:
        frame = pd.DataFrame({"contract_id": contract, "ofi": ofi}, index=quotes.index)
        return frame.astype(OFI_COLUMNS)
    time = utc_nanos(quotes.index)
    bars = group_rows(time - time % step, contract)
    frame = pd.DataFrame(
        {
            "contract_id": bars.keys[1],
            "ofi": bars.reduce(np.add, np.where(np.isnan(ofi), 0.0, ofi)),
            "quote_count": bars.lengths,
        },
        index=to_time_index(bars.keys[0]),
    )
    return frame.astype(OFI_BAR_COLUMNS)
