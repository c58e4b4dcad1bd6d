"""Historical quotes and trades, which carry only IB's one-second time, merged into one tick
frame in IB-time order with a deterministic tie-break within a second.

IB's `reqHistoricalTicks` answers BID_ASK, TRADES and MIDPOINT separately, each in its own
order, each tick stamped to the second. Across seconds the order is known; within a second
nobody can tell whether a trade came before or after a quote of the same contract, and that
decides which quote a classifier prices the trade against. `merge_history` keeps every
stream's own order and places, per contract and second, each trade after some number `p` of
that second's quotes (`p = 0`: it meets the last quote of an earlier second). `TIE_BREAKS`:

- `taken` (the default): each trade goes after the first quote, from where the trade before
  it went on, that the next quote shows it taken from: the trade's price on the quote's bid
  or ask, and the next quote has exactly the trade's size less there, or has moved that side
  away with no more than the trade's size on it; the trade after it then comes after the
  quote that shows it, unless it prints further through the book on the same side (a sweep:
  a higher price after a trade at the ask), which stays with the trade before it. A trade
  with no such quote stays where the trade before it went.
- `at_price`: each trade goes after the first quote, from where the trade before it went on,
  whose bid or ask is the trade's price; one that prints at no quote is spread as below.
- `spread`: the second's quotes and trades assumed evenly spread, trade `i` of `n` after
  round((i + 1) * m / (n + 1)) of the `m` quotes.
- `quotes_first`: every trade meets the second's last quote (the quote after it, often).
- `trades_first`: every trade meets the last quote of an earlier second (stale, often).

Measured on the recorded samples with the true aggressor (docs/classification.md, "History:
one-second times", `python -m bench.history_order`), `taken` leaves every classification
method at least as accurate as any other tie-break does; none gets full resolution back.

Midpoints go after the quotes and trades of their second (classification ignores them).
Contracts within one second are in `contract_id` order.

The result is the tick frame of `ibstream.client.frames` (`classify`, delta and bars take it
as is): `ib_time` as given; the index, normally the receive stamp, is synthesized as IB's
second plus the row's position within that second in nanoseconds, so it is strictly
increasing and orders the rows as merged (it is not a time anything was received);
`sequence` is the input's where given, else 0 (unknown).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ibstream.client.frames import FLOAT_FIELDS, TICK_TYPE_CODES, TickColumns, _interned
from ibstream.history.order import DEFAULT_TIE_BREAK, SECOND, TIE_BREAKS, history_order

__all__ = ["DEFAULT_TIE_BREAK", "SECOND", "TIE_BREAKS", "history_order", "merge_history"]

_ROLES = {  # role -> (required columns, tick types allowed, default tick type)
    "quotes": (("bid_price", "ask_price"), ("bid_ask",), "bid_ask"),
    "trades": (("price",), ("last", "all_last"), "last"),
    "midpoints": (("mid_price",), ("mid_point",), "mid_point"),
}
_KIND = {"quotes": 0, "trades": 1, "midpoints": 2}


def merge_history(
    quotes: pd.DataFrame | pa.Table | None = None,
    trades: pd.DataFrame | pa.Table | None = None,
    midpoints: pd.DataFrame | pa.Table | None = None,
    *,
    tie_break: str = DEFAULT_TIE_BREAK,
) -> pd.DataFrame:
    """BID_ASK `quotes`, TRADES `trades` and MIDPOINT `midpoints` of one or more contracts
    (tick-frame columns: `contract_id`, `ib_time` and the type's fields) -> one tick frame
    in IB-time order, ties within a second broken by `tie_break` (see the module doc)."""
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"unknown tie_break {tie_break!r}; use one of {', '.join(TIE_BREAKS)}")
    parts = [
        _columns(role, frame)
        for role, frame in (("quotes", quotes), ("trades", trades), ("midpoints", midpoints))
        if frame is not None
    ]
    kinds = np.concatenate([np.full(len(c), _KIND[r], np.int8) for r, c in parts] or [[]])
    columns = TickColumns.concat([c for _, c in parts])
    if not len(columns):
        return columns.to_frame()
    order = history_order(
        columns.ints[0], columns.ib_ns, kinds, columns.floats[:2], _quote(columns), tie_break
    )  # fmt: skip
    merged = TickColumns(*(a[..., order] for a in columns.arrays()))
    seconds = merged.ib_ns // SECOND
    starts = np.flatnonzero(np.r_[True, seconds[1:] != seconds[:-1]])
    within = np.arange(len(seconds)) - np.repeat(starts, np.diff(np.r_[starts, len(seconds)]))
    merged.recv_ns[:] = seconds * SECOND + within
    return merged.to_frame()


def _quote(columns: TickColumns) -> tuple[np.ndarray, ...]:
    """Bid, bid size, ask, ask size; a side's price NaN where the side is missing (IB: size 0,
    price 0 or -1)."""
    out = []
    for side in ("bid", "ask"):
        price, size = (columns.floats[FLOAT_FIELDS.index(f"{side}_{f}")] for f in ("price", "size"))
        out += [np.where(size == 0, np.nan, price), size]
    return tuple(out)


def _columns(role: str, frame: Any) -> tuple[str, TickColumns]:
    """One stream's frame checked and typed; errors name the argument and the call to make."""
    if isinstance(frame, pa.Table):
        frame = frame.to_pandas()
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(
            f"merge_history({role}=...) takes a pandas DataFrame or a pyarrow Table, "
            f"got {type(frame).__name__}"
        )
    needed, allowed, default = _ROLES[role]
    present = set(frame.columns)
    if not set(needed) <= present:
        other = next(
            (r for r, (n, _, _) in _ROLES.items() if r != role and set(n) <= present), None
        )
        hint = f"; it looks like {other}: pass it as merge_history({other}=...)" if other else ""
        raise ValueError(
            f"merge_history({role}=...) needs columns {', '.join(needed)}; the frame has "
            f"{', '.join(map(str, frame.columns)) or 'none'}{hint}"
        )
    codes = np.full(len(frame), TICK_TYPE_CODES[default], np.int8)
    if "tick_type" in present:
        codes = _tick_type_codes(frame["tick_type"], role, allowed)
    for name, how in (
        ("contract_id", "frame.assign(contract_id=<IB conId>)"),
        ("ib_time", "frame.assign(ib_time=pd.to_datetime(<IB's time>, utc=True))"),
    ):
        if name not in present:
            raise ValueError(
                f"merge_history({role}=...): the frame has no {name} column; history is "
                f"merged by contract and IB's time, so every row needs it: {how}"
            )
    n = len(frame)
    ib_ns = _ib_ns(frame["ib_time"], role)
    floats = np.full((len(FLOAT_FIELDS), n), np.nan)
    for i, name in enumerate(FLOAT_FIELDS):
        if name in present:
            floats[i] = pd.to_numeric(frame[name], errors="raise").to_numpy(
                np.float64, na_value=np.nan
            )
    sequence = (
        frame["sequence"].to_numpy(np.int64) if "sequence" in present else np.zeros(n, np.int64)
    )
    return role, TickColumns(
        np.zeros(n, np.int64),
        codes,
        np.stack([frame["contract_id"].to_numpy(np.int64), sequence]),
        floats,
        _texts(frame, "exchange"),
        _texts(frame, "conditions"),
        ib_ns,
    )


def _tick_type_codes(values: pd.Series, role: str, allowed: tuple[str, ...]) -> np.ndarray:
    """Category codes of a tick_type column (our spelling or IB's), each one `role` takes."""
    kinds = pd.Categorical(values)
    lut = np.array([TICK_TYPE_CODES.get(str(k), -1) for k in kinds.categories], np.int8)
    ok = {TICK_TYPE_CODES[a] for a in allowed}
    used = np.unique(kinds.codes[kinds.codes >= 0])
    wrong = sorted(str(kinds.categories[c]) for c in used if lut[c] not in ok)
    if wrong or (kinds.codes < 0).any():
        raise ValueError(
            f"merge_history({role}=...) got {', '.join(wrong) or 'missing'} tick types; {role} "
            f"are {' / '.join(allowed)} ticks: split a mixed frame by tick_type, e.g. "
            "merge_history(quotes=f[f.tick_type == 'bid_ask'], "
            "trades=f[f.tick_type.isin(['last', 'all_last'])])"
        )
    return lut[kinds.codes]


def _texts(frame: pd.DataFrame, name: str) -> np.ndarray:
    """A text column as str / None objects (one object per distinct value)."""
    if name not in frame.columns:
        return np.full(len(frame), None, dtype=object)
    strings = pa.array(frame[name], type=pa.string(), from_pandas=True)
    return _interned(strings.combine_chunks() if isinstance(strings, pa.ChunkedArray) else strings)


def _ib_ns(values: pd.Series, role: str) -> np.ndarray:
    """IB's time (datetimes, naive read as UTC, or epoch seconds) as int64 nanoseconds."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        times = pd.to_datetime(values, unit="s", utc=True)
    else:
        times = pd.to_datetime(values, utc=True)
    missing = times.isna().to_numpy()
    if missing.any():
        raise ValueError(
            f"merge_history({role}=...): {int(missing.sum())} rows have no ib_time (the first "
            f"is row {int(missing.argmax())}); IB stamps every historical tick, so drop or fix them"
        )
    ns = pd.DatetimeIndex(times).as_unit("ns").asi8
    return np.array(ns, dtype=np.int64)
