"""Which of IB's historical ticks a gap still lacks, and where they go in the store.

Historical ticks carry IB's one-second time only, and at a gap's edges they overlap live ticks
already stored. A historical tick and a stored one are the same tick when their IB second and
fields (`MATCH`: price and size of a trade, the four quote fields, the midpoint) are equal;
within one second the matching is by count (a multiset), so two equal trades in a second
stored once live are stored once more from history, never twice and never dropped.

Receive times are synthesized: a tick goes at the start of its IB second, moved just enough to
stay strictly increasing and strictly inside the gap (after the last tick before it, before the
first live tick after it), so the stream's `time` column stays in arrival order.
"""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from ibstream.model import Tick, TickType
from ibstream.store import layout

NS = 1_000_000_000
WHAT = {"last": "TRADES", "all_last": "TRADES", "bid_ask": "BID_ASK", "mid_point": "MIDPOINT"}
# (history table column, store column) compared per kind
MATCH = {
    "TRADES": (("price", "price"), ("size", "size")),
    "BID_ASK": (
        ("bid", "bid_price"),
        ("ask", "ask_price"),
        ("bid_size", "bid_size"),
        ("ask_size", "ask_size"),
    ),
    "MIDPOINT": (("mid", "mid_price"),),
}


def _stream(
    root: layout.StoreRoot, contract_id: int, tick_type: str
) -> tuple[ds.Dataset, ds.Expression]:
    return layout.ticks_dataset(root), (
        (ds.field("contract_id") == contract_id) & (ds.field("tick_type") == tick_type)
    )


def stored_keys(
    root: layout.StoreRoot,
    contract_id: int,
    tick_type: str,
    lo: int,
    hi: int,
    outside: tuple[int, int] | None = None,
) -> Counter:
    """(IB second, fields...) of every stored tick of the stream (live or historical) whose IB
    second is in [lo, hi]; `outside` (receive ns, half-open): only ticks received outside it
    (a history request's hole: the stored ticks around it are what it answers with)."""
    dataset, where = _stream(root, contract_id, tick_type)
    if outside is not None:
        recv = ds.field("time")
        where &= (recv < pa.scalar(outside[0], layout.TIME)) | (
            recv >= pa.scalar(outside[1], layout.TIME)
        )
    columns = [store for _, store in MATCH[WHAT[tick_type]]]
    seconds = ds.field("ib_time")
    where &= (seconds >= pa.scalar(lo * NS, layout.TIME)) & (
        seconds < pa.scalar((hi + 1) * NS, layout.TIME)
    )
    table = dataset.to_table(columns=["ib_time", *columns], filter=where)
    second = pc.divide(table["ib_time"].cast(pa.int64()), NS).to_pylist()
    return Counter(zip(second, *(table[c].to_pylist() for c in columns), strict=True))


def resumed_at(
    root: layout.StoreRoot, contract_id: int, tick_type: str, after_ns: int
) -> tuple[int, int] | None:
    """(receive ns, IB second) of the stream's first live tick received at or after
    `after_ns`, or None while there is none on disk."""
    dataset, where = _stream(root, contract_id, tick_type)
    where &= (ds.field("time") >= pa.scalar(after_ns, layout.TIME)) & (ds.field("source") == "live")
    table = dataset.to_table(columns=["time", "ib_time"], filter=where)
    if table.num_rows == 0:
        return None
    recv = table["time"].cast(pa.int64())
    first = pc.index(recv, pc.min(recv)).as_py()
    ib_time = table["ib_time"].cast(pa.int64())[first].as_py()
    at = recv[first].as_py()
    return at, (ib_time // NS if ib_time is not None else at // NS)


def missing(history: pa.Table, what: str, stored: Counter) -> list[dict]:
    """The historical rows (oldest first) that no stored tick accounts for."""
    names = [h for h, _ in MATCH[what]]
    have = Counter(stored)
    out = []
    for row in history.to_pylist():
        key = (row["time"], *(row[n] for n in names))
        if have[key] > 0:
            have[key] -= 1
        else:
            out.append(row)
    return out


def receive_times(seconds: list[int], after_ns: int, before_ns: int) -> list[int]:
    """Strictly increasing stamps in (after_ns, before_ns), each as near the start of its IB
    second as that allows (see the module's docstring)."""
    return fit_stamps([second * NS for second in seconds], after_ns, before_ns)


def fit_stamps(wanted: list[int], after_ns: int, before_ns: int) -> list[int]:
    """Strictly increasing stamps in (after_ns, before_ns), each as near its `wanted` stamp
    (non-decreasing) as that allows; ValueError when they do not fit."""
    out: list[int] = []
    previous = after_ns
    for stamp in wanted:
        previous = max(stamp, previous + 1)
        out.append(previous)
    ceiling = before_ns
    for i in range(len(out) - 1, -1, -1):
        ceiling = out[i] = min(out[i], ceiling - 1)
    if out and out[0] <= after_ns:
        raise ValueError(f"{len(out)} ticks do not fit between {after_ns} and {before_ns} ns")
    return out


def ticks_of(
    rows: list[dict], what: str, contract_id: int, tick_type: str, recv: list[int]
) -> list[Tick]:
    """Historical rows as `Tick`s of the stream with the given receive times."""
    kind = TickType(tick_type)
    out = []
    for row, stamp in zip(rows, recv, strict=True):
        tick = Tick(contract_id, kind, stamp, ib_time=row["time"])
        if what == "TRADES":
            tick.price, tick.size = row["price"], row["size"]
            tick.exchange, tick.conditions = row["exchange"] or None, row["conditions"] or None
        elif what == "BID_ASK":
            tick.bid_price, tick.ask_price = row["bid"], row["ask"]
            tick.bid_size, tick.ask_size = row["bid_size"], row["ask_size"]
        else:
            tick.mid_price = row["mid"]
        out.append(tick)
    return out
