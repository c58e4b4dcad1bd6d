"""Trade classification: was each trade buyer- or seller-initiated?

`classify(ticks, method)` takes a tick frame in arrival order (`bid_ask` quotes and `last` /
`all_last` trades of one or more contracts) and returns one row per trade with the prevailing
quote of the SAME contract (the last `bid_ask` row of that contract that arrived before the
trade), the state of that quote and the inferred aggressor side. Rules (see
docs/classification.md for accuracy on recorded data):

- `quote`: at or above the ask buy, at or below the bid sell, else neutral (the quote rule as
  discussed by Lee & Ready 1991).
- `tick`: the tick test (Lee & Ready 1991; Holthausen, Leftwich & Mayers 1987): a trade above
  the last different earlier price of its contract (uptick or zero-uptick) is a buy, below it
  a sell; neutral only while no earlier different price exists.
- `lee_ready`: Lee & Ready (1991), "Inferring trade direction from intraday data", J. Finance
  46(2): above the quote midpoint buy, below sell, at the midpoint the tick test. No 5-second
  quote delay: ticks carry their arrival stamp, so the prevailing quote is the one seen first.
- `emo`: Ellis, Michaely & O'Hara (2000), J. Financial and Quantitative Analysis 35(4): at the
  ask buy, at the bid sell, anything else the tick test.
- `clnv`: Chakrabarty, Li, Nguyen & Van Ness (2007), J. Banking & Finance 31(12): in the upper
  30 % of the spread (ask included) buy, in the lower 30 % (bid included) sell, the middle
  40 % and outside the spread the tick test.
- `lookahead` (opt-in, not in METHODS): Lee-Ready, corrected by the next quote of the trade's
  contract within `timeout` (see `lookahead`, after Jurkatis 2022).

Quote states: `ok` (bid < ask), `locked` (bid == ask), `crossed` (bid > ask), `missing` (no
quote yet or an empty side: no price, or a size of 0 where the size is given, as IB reports
an empty side). Prices may be negative or zero (calendar spreads, CL in April 2020). Only `ok` quotes carry a spread: for locked, crossed and missing
quotes lee_ready, emo and clnv use the tick test. `quote` calls a trade a buy when it is at or
above the ask and not at or below the bid (and the mirror for a sell), so a missing quote and
the ambiguous zone of a locked or crossed quote give neutral. Prices within 1e-6 of the spread
count as equal (midpoints are not exact in binary floating point). A trade without a price
is neutral; one without a size is classified all the same (delta gives it volume 0).

The ticks must be in arrival order (receive times that never go back within a contract,
else ValueError). A contract with both `last` and `all_last` trades counts each print once:
from its first `all_last` trade on its `last` trades are left out, with a warning (see
`arrival`).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ibstream.analytics import lookahead as ahead
from ibstream.analytics.arrival import check_order, one_trade_stream, receive_times
from ibstream.analytics.contract_rows import Contracts
from ibstream.analytics.lookahead import LOOKAHEAD, LOOKAHEAD_TIMEOUT, timeout_nanos
from ibstream.analytics.prevailing import Book, carried, empty_state, prevailing
from ibstream.analytics.quotes import quote_prices, tick_kinds
from ibstream.analytics.strings import take_strings

METHODS = ("quote", "tick", "lee_ready", "emo", "clnv")
OPT_IN_METHODS = (LOOKAHEAD,)  # research methods, accepted by name but not listed in METHODS
DEFAULT_METHOD = "lee_ready"
SIDES = ("buy", "sell", "neutral")
QUOTE_STATES = ("ok", "locked", "crossed", "missing")
SIDE_DTYPE = pd.CategoricalDtype(list(SIDES))
QUOTE_DTYPE = pd.CategoricalDtype(list(QUOTE_STATES))
TRADE_COLUMNS = {
    "contract_id": np.dtype("int64"),
    "sequence": np.dtype("int64"),
    "price": np.dtype("float64"),
    "size": np.dtype("float64"),
    "exchange": pd.StringDtype(),
    "bid": np.dtype("float64"),
    "ask": np.dtype("float64"),
    "quote": QUOTE_DTYPE,
    "side": SIDE_DTYPE,
}
CLNV_BAND = 0.3  # share of the spread next to each side that CLNV decides by the quote
EQUAL_WITHIN = 1e-6  # share of the spread within which two prices are equal
_BLOCK = 2**17  # trades per block of `_decide`
_UNDECIDED = 3  # side code of `_rules` where the tick test decides
_ALIASES = {re.sub(r"[^a-z]", "", m): m for m in METHODS + OPT_IN_METHODS} | {
    "quoterule": "quote",
    "ticktest": "tick",
}


def resolve_method(method: str | None) -> str:
    """The canonical method name; accepts case, hyphen and space variants (`Lee-Ready`)."""
    if method is None:
        return DEFAULT_METHOD
    found = _ALIASES.get(re.sub(r"[^a-z]", "", method.lower())) if isinstance(method, str) else None
    if found is None:
        raise ValueError(
            f"unknown classification method {method!r}; use one of "
            f"{', '.join(METHODS + OPT_IN_METHODS)}"
        )
    return found


def classify(
    ticks: pd.DataFrame, method: str | None = None, *, timeout: object = LOOKAHEAD_TIMEOUT
) -> pd.DataFrame:
    """Ticks in arrival order -> the trades frame (one row per trade, see the module doc).
    `timeout` (a duration) is how long after a trade its next quote may come and still count,
    for `lookahead` only."""
    return classify_with_state(ticks, method, timeout=timeout)[0]


def empty_trades(index: pd.Index | None = None) -> pd.DataFrame:
    """A trades frame without rows, with the columns and dtypes of `classify`'s output."""
    index = (
        pd.DatetimeIndex([], dtype="datetime64[ns, UTC]", name="time")
        if index is None
        else index[:0]
    )
    return pd.DataFrame({c: pd.Series(dtype=d) for c, d in TRADE_COLUMNS.items()}, index=index)


def classify_with_state(
    ticks: pd.DataFrame,
    method: str | None = None,
    state: pd.DataFrame | None = None,
    *,
    timeout: object = LOOKAHEAD_TIMEOUT,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`classify` that starts from a carried per-contract `state` and returns the new one.

    The state (see `empty_state`) is what makes batch after batch equal to one big batch.
    For `lookahead` it does not: a trade whose next quote is in a later batch is decided
    without it (`TradeClassifier` holds such trades back instead).
    """
    method = resolve_method(method)
    wait = timeout_nanos(timeout)  # checked for every method, used by lookahead
    if "tick_type" not in ticks.columns:
        raise ValueError(
            "ticks frame has no 'tick_type' column; pass a tick frame (bid_ask and last/all_last "
            "rows) such as ibstream.client.frames.ticks_to_frame returns"
        )
    if ticks.empty:
        return empty_trades(ticks.index), empty_state() if state is None else state
    contract = _column(ticks, "contract_id", np.int64, 0)
    g = Contracts(contract)
    init = carried(state, g.ids)
    time = receive_times(ticks.index)
    if time is not None:
        check_order(time, g, init["time"])
    kinds = tick_kinds(ticks["tick_type"])
    seen = init["all_last"]
    is_trade, seen = one_trade_stream(kinds.trade, kinds.all_last, g, seen)
    bid, ask = _quote_side(ticks, "bid"), _quote_side(ticks, "ask")
    book = prevailing(
        kinds.quote,
        is_trade,
        g,
        _column(ticks, "price", np.float64, np.nan),
        bid,
        ask,
        init,
        method == LOOKAHEAD,
    )
    if time is not None:
        last_time = time.take(g.lasts)
    else:  # none carried: 0
        last_time = np.where(init["known"], init["time"], 0)
    new_state = pd.DataFrame(
        book.state | {"time": last_time, "all_last": seen},
        index=pd.Index(g.ids, name="contract_id"),
        copy=False,
    )
    rows, ids = book.rows, g.ids
    side, quote = _decide(method, book)
    if method == LOOKAHEAD:
        side = _look_ahead(book, side, (bid, ask), time, wait)
    trades = pd.DataFrame(
        {
            "contract_id": _contract_ids(ids, book.code, contract, rows),
            "sequence": _column(ticks, "sequence", np.int64, 0).take(rows),
            "price": book.price,
            "size": _column(ticks, "size", np.float64, np.nan).take(rows),
            "exchange": take_strings(ticks.get("exchange"), rows),
            "bid": book.bid,
            "ask": book.ask,
            "quote": pd.Categorical.from_codes(quote, dtype=QUOTE_DTYPE, validate=False),
            "side": pd.Categorical.from_codes(side, dtype=SIDE_DTYPE, validate=False),
        },
        index=ticks.index.take(rows),
        copy=False,
    )
    trades.attrs = dict(ticks.attrs)  # the contracts' metadata (min_tick ...) goes along
    if state is not None and len(state):
        return trades, pd.concat([state.drop(ids, errors="ignore"), new_state])
    return trades, new_state


def _column(ticks: pd.DataFrame, name: str, dtype: type, default: float) -> np.ndarray:
    if name not in ticks.columns:
        return np.full(len(ticks), default, dtype=dtype)
    column = ticks[name]
    if column.dtype == dtype:
        return column.to_numpy()
    return column.to_numpy(dtype=dtype, na_value=default)


def _contract_ids(
    ids: np.ndarray, code: np.ndarray | None, contract: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """Each trade's contract: the one id; or, for a few, the id of each trade's code (read
    from a table of a few, not gathered from the whole column); else the column."""
    if len(ids) == 1:
        return np.full(len(rows), ids[0])
    if code is None:
        return contract.take(rows)
    out = code.astype(np.int64)
    if (np.diff(ids) == 1).all():  # ids in a row: an offset
        out += ids[0]
        return out
    return ids.take(out)


def _quote_side(ticks: pd.DataFrame, side: str) -> np.ndarray:
    """The `side` (bid or ask) price of each row, NaN where the side is empty (see
    `quotes.quote_prices`)."""
    price = _column(ticks, f"{side}_price", np.float64, np.nan)
    return quote_prices(price, _column(ticks, f"{side}_size", np.float64, np.nan))


def _look_ahead(
    book: Book,
    side: np.ndarray,
    quotes: tuple[np.ndarray, np.ndarray],
    time: np.ndarray | None,
    wait: int,
) -> np.ndarray:
    """Lee-Ready's `side` codes corrected by each trade's next quote (see `lookahead`),
    where that quote (`quotes`: every row's bid and ask, as the rules read them) came within
    `wait` ns of the trade."""
    has_next = book.next_row >= 0
    rows = np.where(has_next, book.next_row, 0)
    if time is not None:
        has_next &= time.take(rows) - time.take(book.rows) <= wait
    after = (quotes[0].take(rows), quotes[1].take(rows))
    return ahead.sides(side, book.price, (book.bid, book.ask), after, has_next)


def _decide(method: str, book: Book) -> tuple[np.ndarray, np.ndarray]:
    """Side codes (0 buy, 1 sell, 2 neutral) and quote-state codes of the trades. The rules
    run a block of rows at a time (their dozen passes then run over data held in the CPU
    cache); the tick test is read where they leave the side undecided."""
    if method == LOOKAHEAD:
        method = "lee_ready"  # corrected afterwards by `_look_ahead`
    price, bid, ask = book.price, book.bid, book.ask
    side, quote = np.empty(len(price), dtype=np.int8), np.empty(len(price), dtype=np.int8)
    for at in range(0, len(price), _BLOCK):
        block = slice(at, at + _BLOCK)
        side[block], quote[block] = _rules(method, price[block], bid[block], ask[block])
    if method == "tick":
        return _side_of(book.tick()), quote
    undecided = np.flatnonzero(side == _UNDECIDED)
    side[undecided] = _side_of(book.tick(undecided))
    return side, quote


def _rules(
    method: str, price: np.ndarray, bid: np.ndarray, ask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Side codes, `_UNDECIDED` where the tick test decides, and quote-state codes."""
    spread = ask - bid
    quote = (spread <= 0).view(np.int8)  # ok 0, locked 1, crossed 2, missing 3
    quote += spread < 0
    quote[np.isnan(spread)] = 3
    if method == "tick":
        return np.full(len(price), _UNDECIDED, dtype=np.int8), quote
    if method == "quote":
        tol = np.abs(spread)
        tol *= EQUAL_WITHIN
        above, below = price >= ask - tol, price <= bid + tol
        return _side_of(above.view(np.int8) - below.view(np.int8)), quote
    tol = EQUAL_WITHIN * spread  # only ok quotes (spread > 0) decide
    if method == "lee_ready":
        off_mid = bid + ask
        off_mid *= 0.5
        np.subtract(price, off_mid, out=off_mid)
        sell = off_mid < 0
        decided = np.abs(off_mid, out=off_mid) > tol
    else:  # at most one of buy and sell holds where the spread is positive
        if method == "emo":
            buy, sell = np.abs(price - ask) <= tol, np.abs(price - bid) <= tol
        else:  # clnv
            band = CLNV_BAND * spread + tol
            buy = (price >= ask - band) & (price <= ask + tol)
            sell = (price <= bid + band) & (price >= bid - tol)
        decided = buy | sell
    decided &= spread > 0
    return np.where(decided, sell.view(np.int8), np.int8(_UNDECIDED)), quote


def _side_of(direction: np.ndarray) -> np.ndarray:
    """Directions +1 / -1 / 0 -> side codes buy 0 / sell 1 / neutral 2."""
    side = (direction == 0).view(np.int8)
    side += side
    side += direction < 0
    return side
