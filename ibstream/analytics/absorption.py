"""Absorption: aggressive volume that met a wall, a heuristic read off trades (and quotes).

A run is a stretch of one contract's trades, in arrival order, that stays within `ticks`
ticks of the price of the run's first trade, with no pause longer than `max_gap` between
two trades; the first trade outside that band, or after such a pause, opens the next run.
A trade without a price is taken at the contract's previous price. A run whose buy (sell)
volume reaches `min_volume` is an absorption event of side "buy" ("sell"): that much
aggressive buying (selling) and the price held. With `quotes`, each event also counts the
refills of the passive side (the ask for "buy", the bid for "sell") between the run's first
and last trade: quotes whose size grew at an unchanged price; events with fewer than
`min_refills` refills are then left out. It is a heuristic: the band, the volume and the
pause are the parameters, and a wall that moved by a tick within the band still counts.

`AbsorptionEngine` is the incremental form: `update` returns the events of runs that a
batch closed; `frame()` adds the runs still open and equals `absorption` of everything fed
so far, for any split (trades and quotes split at the same time).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ibstream.analytics.footprint import contract_ticks
from ibstream.analytics.frame_kinds import expect_quotes, expect_trades
from ibstream.analytics.kernels import to_nanos, to_time_index, trade_arrays, utc_nanos
from ibstream.analytics.vpin import filled_prices

__all__ = ["ABSORPTION_COLUMNS", "AbsorptionEngine", "absorption"]

ABSORPTION_COLUMNS = {
    "contract_id": "int64",
    "side": pd.CategoricalDtype(["buy", "sell"]),
    "end": "datetime64[ns, UTC]",
    "volume": "float64",
    "opposite_volume": "float64",
    "trade_count": "int64",
    "price_low": "float64",
    "price_high": "float64",
    "refills": "float64",
    "refill_volume": "float64",
}
_WIDTH = 32  # trades ahead looked at for every trade at once before searching run by run


def absorption(
    trades: pd.DataFrame,
    quotes: pd.DataFrame | None = None,
    *,
    min_volume: float,
    ticks: int = 1,
    tick_size: float | None = None,
    max_gap: object = "5s",
    min_refills: int = 1,
) -> pd.DataFrame:
    """Absorption events (see the module doc), one row per run and side, index `time` = the
    run's first trade, `end` = its last; sorted by time, contract, side. Without quotes,
    refills and refill_volume are NaN. `tick_size` defaults to each contract's `min_tick`."""
    engine = AbsorptionEngine(min_volume, ticks, tick_size, max_gap, min_refills)
    engine.update(trades, quotes)
    return engine.frame()


@dataclass
class _Carry:
    """One contract's open run (its trades from the first) and the quotes since it began."""

    trades: dict = field(default_factory=dict)  # time, price, size, side arrays
    ordinal: int = 0  # the contract's trade number of the open run's first trade
    price: float = np.nan  # the last price before the open run (for a first NaN price)
    quotes: dict = field(default_factory=dict)  # time and per side refill flags, amounts
    book: tuple = (np.nan,) * 4  # the last quote: bid, bid_size, ask, ask_size


class AbsorptionEngine:
    """`absorption` fed batch by batch. The state per contract is the open run's trades and
    the quotes since it began; `frame()` keeps the events closed so far."""

    def __init__(self, min_volume, ticks=1, tick_size=None, max_gap="5s", min_refills=1):
        ok = isinstance(min_volume, int | float) and not isinstance(min_volume, bool)
        if not ok or not min_volume > 0:
            raise ValueError(f"min_volume must be a positive volume, got {min_volume!r}")
        for name, value in (("ticks", ticks), ("min_refills", min_refills)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if tick_size is not None and not (isinstance(tick_size, int | float) and tick_size > 0):
            raise ValueError(f"tick_size must be a positive number or None, got {tick_size!r}")
        self.min_volume, self.ticks, self.tick_size = float(min_volume), ticks, tick_size
        self.gap, self.min_refills = to_nanos(max_gap, "max_gap"), min_refills
        self._carry: dict[int, _Carry] = {}
        self._closed: list[pd.DataFrame] = []
        self._quoted = None  # whether quotes come with the trades (fixed by the first batch)

    def update(self, trades: pd.DataFrame, quotes: pd.DataFrame | None = None) -> pd.DataFrame:
        """The events of the runs this batch closed."""
        expect_trades(trades, "absorption")
        if quotes is not None:
            expect_quotes(quotes, "absorption")
        if self._quoted is not None and self._quoted != (quotes is not None):
            raise ValueError("pass quotes with every batch or with none")
        self._quoted = quotes is not None
        a = trade_arrays(trades)
        per_tick = contract_ticks(getattr(trades, "attrs", {}), a.contract)
        book = _quote_arrays(quotes)
        carry = {cid: _copy(c) for cid, c in self._carry.items()}
        rows = []
        for cid in np.union1d(pd.unique(a.contract), pd.unique(book["contract_id"])):
            c = carry.setdefault(int(cid), _Carry())
            _add_quotes(c, book, book["contract_id"] == cid)
            mine = np.flatnonzero(a.contract == cid)
            if len(mine):
                tick = self._tick(per_tick, mine, int(cid))
                rows.append(self._advance(c, int(cid), a, mine, tick))
            elif not c.trades and c.quotes:  # no run open: only the latest stamp can count
                keep = c.quotes["time"] >= c.quotes["time"][-1] if len(c.quotes["time"]) else []
                c.quotes = {k: v[keep] for k, v in c.quotes.items()}
        self._carry = carry
        closed = _events(rows, self)
        self._closed.append(closed)
        return closed.drop(columns="_ordinal")

    def frame(self) -> pd.DataFrame:
        """Every event so far, the open runs' included (equal to `absorption` of it all)."""
        open_runs = [
            _reduce(c.trades, np.zeros(1, dtype=np.int64), cid, c.ordinal, c.quotes)
            for cid, c in self._carry.items()
            if len(c.trades.get("time", ()))
        ]
        every = pd.concat([*self._closed, _events(open_runs, self)])
        return _sorted(every).drop(columns="_ordinal")

    def _tick(self, per_tick: object, rows: np.ndarray, cid: int) -> float:
        if self.tick_size is not None:
            return float(self.tick_size)
        tick = per_tick[rows[0]] if isinstance(per_tick, np.ndarray) else per_tick
        if tick is None or not np.isfinite(tick):
            raise ValueError(
                f"absorption needs a tick size for contract {cid}: the trades' attrs do not "
                "give its min_tick; pass tick_size="
            )
        return float(tick)

    def _advance(self, c: _Carry, cid: int, a: object, rows: np.ndarray, tick: float) -> dict:
        """Join the open run to this batch's trades, close all runs but the last."""
        new = {"time": a.time[rows], "price": a.price[rows], "size": a.size[rows]}
        new["side"] = a.side[rows]
        t = {k: np.concatenate([c.trades[k], v]) if c.trades else v for k, v in new.items()}
        if np.isnan(t["price"]).any():
            t["price"] = filled_prices(t["price"], c.price)
        band = (self.ticks + 1e-6) * tick
        starts = run_starts(t["time"], t["price"], band, self.gap)
        last = int(starts[-1])
        out = _reduce(t, starts[:-1], cid, c.ordinal, c.quotes, end=last)
        c.price = float(t["price"][last - 1]) if last else c.price
        c.trades = {k: v[last:] for k, v in t.items()}
        c.ordinal += last
        if c.quotes:  # only quotes from the open run's first trade on can count for it
            keep = c.quotes["time"] >= c.trades["time"][0]
            c.quotes = {k: v[keep] for k, v in c.quotes.items()}
        return out


def run_starts(time: np.ndarray, price: np.ndarray, band: float, gap: int) -> np.ndarray:
    """Positions of the first trades of runs (see the module doc), the first always 0.

    Where each trade's run would end is found for every trade at once, one vector pass per
    distance up to `_WIDTH` trades ahead, each pass over the trades still undecided; only
    the runs' own first trades are then followed, one list step per run, and a run longer
    than that is searched on its own.
    """
    n = len(price)
    pause = np.zeros(n, dtype=bool)
    pause[1:] = np.diff(time) > gap
    suffix = np.minimum.accumulate(np.where(pause, np.arange(n), n)[::-1])[::-1]
    end = np.append(suffix[1:], n)  # the next pause; lowered to the first trade out of band
    at = np.arange(n)
    undecided, d = end > at + 1, 1
    while d <= min(_WIDTH, n - 1) and np.count_nonzero(undecided) > n // 4:  # most: slices
        hit = undecided[:-d] & (np.abs(price[d:] - price[:-d]) > band) & (at[:-d] + d < end[:-d])
        end[:-d][hit] = at[:-d][hit] + d
        undecided &= at + d + 1 < end
        d += 1
    open_ = np.flatnonzero(undecided)
    for ahead in range(d, min(_WIDTH, n - 1) + 1):  # the few left: gathered
        open_ = open_[open_ + ahead < end[open_]]
        out = np.abs(price[open_ + ahead] - price[open_]) > band
        end[open_[out]] = open_[out] + ahead
        open_ = open_[~out]
        if not len(open_):
            break
    sure = np.ones(n, dtype=bool)
    sure[open_[open_ + _WIDTH < end[open_]]] = False
    ends, certain, starts, at = end.tolist(), sure.tolist(), [], 0
    while at < n:
        starts.append(at)
        at = ends[at] if certain[at] else _search(price, at, band, ends[at])
    return np.array(starts, dtype=np.int64)


def _search(price: np.ndarray, at: int, band: float, stop: int) -> int:
    """The first trade after `at` and before `stop` out of `at`'s band, else `stop`."""
    step, lo = 4 * _WIDTH, at + _WIDTH + 1
    while lo < stop:
        hi = min(stop, lo + step)
        out = np.flatnonzero(np.abs(price[lo:hi] - price[at]) > band)
        if len(out):
            return lo + int(out[0])
        lo, step = hi, step * 2
    return stop


def _reduce(t: dict, starts: np.ndarray, cid: int, ordinal: int, quotes: dict, end=None) -> dict:
    """Per run beginning at `starts` (the last one ends at `end`, else at the last trade):
    its volumes, count, range, times and passive-side refills."""
    stop = len(t["time"]) if end is None else end
    bounds = np.append(starts, stop)
    sized = t["size"][:stop]
    flows = [np.where(t["side"][:stop] == s, sized, 0.0) for s in (0, 1)]
    sums = [np.add.reduceat(f, starts) if len(starts) else f[:0] for f in flows]
    price = t["price"][:stop]
    low = np.fmin.reduceat(price, starts) if len(starts) else price[:0]
    high = np.fmax.reduceat(price, starts) if len(starts) else price[:0]
    first, last = t["time"][starts], t["time"][bounds[1:] - 1]
    refills = {s: _refills(quotes, s, first, last) for s in ("ask", "bid")}
    return {
        "time": first,
        "end": last,
        "ordinal": ordinal + starts,
        "contract_id": np.full(len(starts), cid, dtype=np.int64),
        "buy": sums[0],
        "sell": sums[1],
        "trade_count": np.diff(bounds),
        "price_low": low,
        "price_high": high,
        "refills": refills,
    }


def _refills(quotes: dict, side: str, first: np.ndarray, last: np.ndarray) -> tuple:
    """Per run, the count and volume of `side` refills among quotes at [first, last]."""
    if not quotes:
        return np.full(len(first), np.nan), np.full(len(first), np.nan)
    time = quotes["time"]
    lo, hi = np.searchsorted(time, first, "left"), np.searchsorted(time, last, "right")
    flag, amount = quotes[f"{side}_flag"], np.append(quotes[f"{side}_amount"], 0.0)
    counts = np.append(0, np.cumsum(flag))
    edges = np.ravel(np.column_stack([lo, np.maximum(hi, lo)]))
    sums = np.add.reduceat(amount, edges)[::2] if len(edges) else amount[:0]
    return (counts[hi] - counts[lo]).astype(np.float64), np.where(hi > lo, sums, 0.0)


def _events(parts: list[dict], engine: AbsorptionEngine) -> pd.DataFrame:
    """Runs -> events: one row per run and side whose volume reached `min_volume`."""
    rows = []
    for side, mine, other, passive in (
        ("buy", "buy", "sell", "ask"),
        ("sell", "sell", "buy", "bid"),
    ):
        for p in parts:
            hit = p[mine] >= engine.min_volume
            count, volume = (v[hit] for v in p["refills"][passive])
            if engine._quoted:
                hit_count = count >= engine.min_refills
                hit = np.flatnonzero(hit)[hit_count]
                count, volume = count[hit_count], volume[hit_count]
            rows.append(
                {
                    "time": p["time"][hit],
                    "ordinal": p["ordinal"][hit],
                    "contract_id": p["contract_id"][hit],
                    "side": np.full(len(p["time"][hit]), side, dtype=object),
                    "end": p["end"][hit],
                    "volume": p[mine][hit],
                    "opposite_volume": p[other][hit],
                    "trade_count": p["trade_count"][hit],
                    "price_low": p["price_low"][hit],
                    "price_high": p["price_high"][hit],
                    "refills": count,
                    "refill_volume": volume,
                }
            )
    return _frame(rows)


def _frame(rows: list[dict]) -> pd.DataFrame:
    keys = ("time", "ordinal", *ABSORPTION_COLUMNS)
    merged = {k: np.concatenate([r[k] for r in rows]) if rows else np.zeros(0) for k in keys}
    data = {}
    for k, dtype in ABSORPTION_COLUMNS.items():
        if k == "end":
            data[k] = pd.array(to_time_index(merged[k]))
        elif k == "side":
            data[k] = pd.Categorical(merged[k], dtype=dtype)
        else:
            data[k] = np.asarray(merged[k], dtype=dtype)
    frame = pd.DataFrame(data, index=to_time_index(merged["time"]))
    frame.insert(0, "_ordinal", np.asarray(merged["ordinal"], dtype=np.int64))
    return _sorted(frame)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    """By time, contract, the contract's trade order (the hidden `_ordinal`), side."""
    side = frame["side"].cat.codes.to_numpy()
    order = np.lexsort(
        (side, frame["_ordinal"].to_numpy(), frame["contract_id"].to_numpy(), frame.index.asi8)
    )
    return frame.iloc[order]


def _quote_arrays(quotes: pd.DataFrame | None) -> dict:
    if quotes is None:
        return {"contract_id": np.zeros(0, dtype=np.int64)}
    from ibstream.analytics.microprice import quote_book

    book = quote_book(quotes, "absorption")
    book["time"] = utc_nanos(book["index"])
    return book


def _add_quotes(c: _Carry, book: dict, mine: np.ndarray) -> None:
    """Append a contract's quotes with their refill flags (size up at the same price)."""
    if "time" not in book:
        return
    new = {k: book[k][mine] for k in ("time", "bid_price", "bid_size", "ask_price", "ask_size")}
    if not c.quotes:
        c.quotes = {"time": np.zeros(0, dtype=np.int64)}
        for side in ("bid", "ask"):
            c.quotes |= {f"{side}_flag": np.zeros(0), f"{side}_amount": np.zeros(0)}
    before = [np.concatenate([[c.book[i]], v]) for i, v in enumerate(_columns(new))]
    for i, side in ((0, "bid"), (2, "ask")):
        price, size = before[i], before[i + 1]
        grew = (price[1:] == price[:-1]) & (size[1:] > size[:-1])
        amount = np.where(grew, size[1:] - size[:-1], 0.0)
        c.quotes[f"{side}_flag"] = np.concatenate([c.quotes[f"{side}_flag"], grew])
        c.quotes[f"{side}_amount"] = np.concatenate([c.quotes[f"{side}_amount"], amount])
    c.quotes["time"] = np.concatenate([c.quotes["time"], new["time"]])
    if len(new["time"]):
        c.book = tuple(float(v[-1]) for v in _columns(new))


def _columns(q: dict) -> list[np.ndarray]:
    return [q["bid_price"], q["bid_size"], q["ask_price"], q["ask_size"]]


def _copy(c: _Carry) -> _Carry:
    return _Carry(dict(c.trades), c.ordinal, c.price, dict(c.quotes), c.book)
