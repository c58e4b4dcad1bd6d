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

Quote states: `ok` (bid < ask), `locked` (bid == ask), `crossed` (bid > ask), `missing` (no
quote yet or a NaN side). Only `ok` quotes carry a spread: for locked, crossed and missing
quotes lee_ready, emo and clnv use the tick test. `quote` calls a trade a buy when it is at or
above the ask and not at or below the bid (and the mirror for a sell), so a missing quote and
the ambiguous zone of a locked or crossed quote give neutral. Prices within 1e-6 of the spread
count as equal (midpoints are not exact in binary floating point).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ibstream.errors import StreamError
from ibstream.model import TickType

METHODS = ("quote", "tick", "lee_ready", "emo", "clnv")
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
_ALIASES = {re.sub(r"[^a-z]", "", m): m for m in METHODS} | {
    "quoterule": "quote",
    "ticktest": "tick",
}
_SIDE_OF_DIRECTION = np.array([1, 2, 0], dtype=np.int8)  # direction -1/0/+1 -> sell/neutral/buy


def resolve_method(method: str | None) -> str:
    """The canonical method name; accepts case, hyphen and space variants (`Lee-Ready`)."""
    if method is None:
        return DEFAULT_METHOD
    found = _ALIASES.get(re.sub(r"[^a-z]", "", method.lower())) if isinstance(method, str) else None
    if found is None:
        raise ValueError(
            f"unknown classification method {method!r}; use one of {', '.join(METHODS)}"
        )
    return found


def classify(ticks: pd.DataFrame, method: str | None = None) -> pd.DataFrame:
    """Ticks in arrival order -> the trades frame (one row per trade, see the module doc)."""
    return classify_with_state(ticks, method)[0]


def empty_trades(index: pd.Index | None = None) -> pd.DataFrame:
    """A trades frame without rows, with the columns and dtypes of `classify`'s output."""
    index = (
        pd.DatetimeIndex([], dtype="datetime64[ns, UTC]", name="time")
        if index is None
        else index[:0]
    )
    return pd.DataFrame({c: pd.Series(dtype=d) for c, d in TRADE_COLUMNS.items()}, index=index)


def classify_with_state(
    ticks: pd.DataFrame, method: str | None = None, state: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`classify` that starts from a carried per-contract `state` and returns the new one.

    The state (index contract_id; columns bid, ask: last quote; price: last trade price; tick:
    last nonzero price change sign) is what makes batch after batch equal to one big batch.
    """
    method = resolve_method(method)
    if "tick_type" not in ticks.columns:
        raise ValueError(
            "ticks frame has no 'tick_type' column; pass a tick frame (bid_ask and last/all_last "
            "rows) such as ibstream.client.frames.ticks_to_frame returns"
        )
    state = empty_state() if state is None else state
    if ticks.empty:
        return empty_trades(ticks.index), state
    is_quote, is_trade = _kinds(ticks["tick_type"])
    cid = _column(ticks, "contract_id", np.int64, 0)
    ids, codes = _contracts(cid)
    book = _prevailing(is_quote, is_trade, codes, ticks, state.reindex(ids))
    rows, price = book.rows, book.price
    side, quote = _decide(method, price, book.bid, book.ask, book.tick)
    exchange = ticks["exchange"].array.take(rows) if "exchange" in ticks else [None] * len(rows)
    trades = pd.DataFrame(
        {
            "contract_id": np.full(len(rows), ids[0]) if len(ids) == 1 else cid.take(rows),
            "sequence": _column(ticks, "sequence", np.int64, 0).take(rows),
            "price": price,
            "size": _column(ticks, "size", np.float64, np.nan).take(rows),
            "exchange": pd.array(exchange, dtype=TRADE_COLUMNS["exchange"]),
            "bid": book.bid,
            "ask": book.ask,
            "quote": pd.Categorical.from_codes(quote, dtype=QUOTE_DTYPE, validate=False),
            "side": pd.Categorical.from_codes(side, dtype=SIDE_DTYPE, validate=False),
        },
        index=ticks.index.take(rows),
        copy=False,
    )
    last = book.last.set_axis(pd.Index(ids, name="contract_id"))
    return trades, pd.concat([state.drop(ids, errors="ignore"), last]) if len(state) else last


def empty_state() -> pd.DataFrame:
    """The carried state of `classify_with_state` before any tick."""
    cols = {"bid": "float64", "ask": "float64", "price": "float64", "tick": "int8"}
    return pd.DataFrame(
        {c: pd.Series(dtype=d) for c, d in cols.items()},
        index=pd.Index([], dtype="int64", name="contract_id"),
    )


def _kinds(tick_type: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Which rows are quotes (bid_ask) and which are trades (last/all_last)."""
    if isinstance(tick_type.dtype, pd.CategoricalDtype):
        codes, names = tick_type.cat.codes.to_numpy(), tick_type.cat.categories
    else:
        codes, names = pd.factorize(tick_type)
    is_quote, is_trade = np.zeros(len(codes), dtype=bool), np.zeros(len(codes), dtype=bool)
    for i, name in enumerate(names):
        try:
            parsed = TickType.parse(name)
        except StreamError:
            continue  # other tick types are ignored
        if parsed is TickType.BID_ASK:
            is_quote |= codes == i
        elif parsed in (TickType.LAST, TickType.ALL_LAST):
            is_trade |= codes == i
    return is_quote, is_trade


def _column(ticks: pd.DataFrame, name: str, dtype: type, default: float) -> np.ndarray:
    if name not in ticks.columns:
        return np.full(len(ticks), default, dtype=dtype)
    column = ticks[name]
    if column.dtype == dtype:
        return column.to_numpy()
    return column.to_numpy(dtype=dtype, na_value=default)


def _contracts(cid: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Distinct contract ids and each row's position among them (None: just one)."""
    if (cid == cid[0]).all():
        return cid[:1], None
    codes, ids = pd.factorize(cid)
    return ids, codes


@dataclass(frozen=True)
class _Book:
    rows: np.ndarray  # the trade rows, arrival order
    price: np.ndarray  # their price
    bid: np.ndarray  # their prevailing quote
    ask: np.ndarray
    tick: np.ndarray  # their tick-test direction: +1, -1 or 0
    last: pd.DataFrame  # per contract: bid, ask, price, tick after the last row


def _prevailing(
    is_quote: np.ndarray,
    is_trade: np.ndarray,
    codes: np.ndarray | None,
    ticks: pd.DataFrame,
    init: pd.DataFrame,
) -> _Book:
    """Prevailing quote and tick-test direction of every trade. Rows are grouped by contract
    (a stable sort when there are several); a forward fill counts marks with a cumsum."""
    px = {c: _column(ticks, c, np.float64, np.nan) for c in ("price", "bid_price", "ask_price")}
    start = {c: init[c].to_numpy(np.float64) for c in ("bid", "ask", "price")}
    start["tick"] = init["tick"].fillna(0).to_numpy(np.int8)
    k, n = len(init), len(is_quote)
    if codes is None:
        order = starts = tcode = None
        ts = np.flatnonzero(is_trade)
    else:  # group the rows by contract; a stable sort of uint16 is a radix sort
        order = np.argsort(codes.astype(np.uint16 if k <= 65536 else np.intp), kind="stable")
        kind = (is_quote.view(np.int8) + 2 * is_trade.view(np.int8)).take(order)
        is_quote, ts = kind == 1, np.flatnonzero(kind == 2)
        starts = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=k))[:-1]])
        tcode = np.repeat(np.arange(k), np.diff(np.append(np.searchsorted(ts, starts), len(ts))))
    quotes = _Marks(is_quote, starts)
    qpos = quotes.before(ts, tcode)
    ends = np.append(starts[1:], n) - 1 if starts is not None else np.array([n - 1])
    qend = quotes.before(ends, None if starts is None else np.arange(k))
    rows = ts if order is None else order.take(ts)
    tick, last_price, last_tick = _tick_test(px["price"].take(rows), tcode, k, start)
    if order is not None:  # back to arrival order: rows is k ascending runs, a quick sort
        arrival = np.argsort(rows, kind="stable")
        rows, tick, tcode = rows.take(arrival), tick.take(arrival), tcode.take(arrival)
        qpos, qend = _rows(order, qpos.take(arrival)), _rows(order, qend)
    fill = (lambda a: a[0]) if tcode is None else (lambda a: a.take(tcode))
    last = pd.DataFrame(
        {
            "bid": _pick(px["bid_price"], qend, start["bid"]),
            "ask": _pick(px["ask_price"], qend, start["ask"]),
            "price": last_price,
            "tick": last_tick,
        }
    )
    return _Book(
        rows,
        px["price"].take(rows),
        _pick(px["bid_price"], qpos, fill(start["bid"]), ascending=order is None),
        _pick(px["ask_price"], qpos, fill(start["ask"]), ascending=order is None),
        tick,
        last,
    )


class _Marks:
    """The last marked position at or before given positions of a sequence grouped by
    contract (groups beginning at `starts`; None for one contract), by counting marks."""

    def __init__(self, marked: np.ndarray, starts: np.ndarray | None) -> None:
        self.count = np.cumsum(marked, dtype=np.int32 if len(marked) < 2**31 else np.int64)
        self.marks = np.concatenate([[-1], np.flatnonzero(marked)])  # [count] -> position
        self.earlier = None  # marks before each group's first position
        if starts is not None and len(marked):
            self.earlier = np.where(starts > 0, self.count.take(starts - 1), 0)

    def before(self, at: np.ndarray | None, group: np.ndarray | None) -> np.ndarray:
        """Per position in `at` (None: every position) of group `group`: the last marked
        position of the same group at or before it, else -1."""
        seen = self.count if at is None else self.count.take(at)
        pos = self.marks.take(seen)
        if self.earlier is not None:
            pos[seen <= self.earlier.take(group)] = -1
        return pos


def _tick_test(
    price: np.ndarray, codes: np.ndarray | None, k: int, start: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tick-test direction of each trade (grouped by contract), and per contract the last
    price and direction. A run of equal prices takes the sign of the change that began it;
    each contract's first run compares with its carried last price (or keeps its direction)."""
    valid = None if not np.isnan(price).any() else ~np.isnan(price)
    p, c = (
        (price, codes)
        if valid is None
        else (price[valid], codes if codes is None else codes[valid])
    )
    if c is None:
        firsts, lasts = np.arange(min(len(p), 1)), np.array([len(p) - 1])
        first_price, first_tick = start["price"], start["tick"]
    else:
        firsts = np.searchsorted(c, np.arange(k))
        lasts = np.searchsorted(c, np.arange(k), "right") - 1
        present = firsts <= lasts  # contracts with trades here
        lasts[~present], firsts = -1, firsts[present]
        first_price, first_tick = start["price"][present], start["tick"][present]
    new_run = np.empty(len(p), dtype=bool)
    new_run[1:] = p[1:] != p[:-1]
    new_run[firsts] = True
    starts = np.flatnonzero(new_run)
    earlier = p.take(starts - 1) if len(starts) else p[:0]
    at_first = np.searchsorted(starts, firsts)
    earlier[at_first] = first_price
    change = p.take(starts) - earlier  # NaN where no earlier price: direction 0
    sign = (change > 0).view(np.int8) - (change < 0).view(np.int8)
    sign[at_first] = np.where(change[at_first] == 0, first_tick, sign[at_first])
    tick = sign.take(np.cumsum(new_run, dtype=np.intp) - 1)
    last = (_pick(p, lasts, start["price"]), _pick(tick, lasts, start["tick"]))
    return (tick if valid is None else _place(tick, np.flatnonzero(valid), len(price))), *last


def _rows(order: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Grouped positions (-1: none) -> original rows."""
    return np.where(pos >= 0, order.take(pos), -1)


def _pick(
    values: np.ndarray, pos: np.ndarray, fallback: np.ndarray | float, ascending: bool = False
) -> np.ndarray:
    """values[pos] where pos >= 0, else the fallback (a scalar or one per position);
    `ascending` positions have their -1s in front."""
    out = values.take(pos) if len(values) else np.empty(len(pos), dtype=values.dtype)
    missing = slice(0, np.searchsorted(pos, 0)) if ascending else pos < 0
    out[missing] = fallback if np.ndim(fallback) == 0 else fallback[missing]
    return out


def _place(values: np.ndarray, dest: np.ndarray, n: int) -> np.ndarray:
    """values put at positions dest of an array of n (zeros elsewhere)."""
    out = np.zeros(n, dtype=values.dtype)
    out[dest] = values
    return out


def _decide(
    method: str, price: np.ndarray, bid: np.ndarray, ask: np.ndarray, tick: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Side codes (0 buy, 1 sell, 2 neutral) and quote-state codes of the trades."""
    spread = ask - bid
    quote = (spread <= 0).view(np.int8) + (spread < 0).view(np.int8)  # ok, locked, crossed
    quote[np.isnan(spread)] = 3  # missing
    if method == "tick":
        direction = tick
    elif method == "quote":
        tol = EQUAL_WITHIN * np.abs(spread)
        direction = (price >= ask - tol).view(np.int8) - (price <= bid + tol).view(np.int8)
    else:
        tol = EQUAL_WITHIN * spread  # only ok quotes (spread > 0) decide
        if method == "lee_ready":
            off_mid = price - (bid + ask) * 0.5
            buy, sell = off_mid > tol, off_mid < -tol
        elif method == "emo":
            buy, sell = np.abs(price - ask) <= tol, np.abs(price - bid) <= tol
        else:  # clnv
            band = CLNV_BAND * spread + tol
            buy = (price >= ask - band) & (price <= ask + tol)
            sell = (price <= bid + band) & (price >= bid - tol)
        decided = (buy | sell) & (quote == 0)
        direction = np.where(decided, buy.view(np.int8) - sell.view(np.int8), tick)
    return _SIDE_OF_DIRECTION.take(direction + 1), quote
