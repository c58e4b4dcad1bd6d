"""Which of IB's historical ticks a gap still lacks, and where they go in the store.

Historical ticks carry IB's one-second time only, and at a gap's edges they overlap live ticks
already stored. A historical tick and a stored one are the same tick when their IB second and
fields (`MATCH`: price and size of a trade, the four quote fields, the midpoint) are equal;
within one second the matching is by count (a multiset), so two equal trades in a second
stored once live are stored once more from history, never twice and never dropped. In a
second at the gap's edge, the ticks stored before the gap are IB's first ones of that second
and those after it IB's last ones: they are matched from the front and from the back of the
second, so what is added keeps IB's order between them (matched by count alone, a tick equal
to one of the tail would be taken from the head, and the second's order, which the tick test
reads, would change).

Receive times are synthesized: a tick goes at the start of its IB second, moved just enough to
stay strictly increasing and strictly inside the gap (after the last tick before it, before the
first live tick after it), so the stream's `time` column stays in arrival order.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
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


def _has_ticks(root: layout.StoreRoot) -> bool:
    """False for a store with gaps but no tick written yet (a first run's `before_start`)."""
    return root.fs.get_file_info(root.path(layout.TICKS)).type.name != "NotFound"


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
    split_ns: int = 0,
    outside: tuple[int, int] | None = None,
) -> tuple[Counter, Counter]:
    """(IB second, fields...) of every stored tick of the stream (live or historical) whose IB
    second is in [lo, hi]: those received up to `split_ns` (a gap's start: a crash's gap
    starts at its last tick on disk) and the rest. `outside` (receive ns, half-open): only
    ticks received outside it (a history request's hole: the stored ticks around it are what
    it answers with)."""
    before: Counter = Counter()
    after: Counter = Counter()
    if not _has_ticks(root):
        return before, after
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
    table = dataset.to_table(columns=["time", "ib_time", *columns], filter=where)
    second = pc.divide(table["ib_time"].cast(pa.int64()), NS).to_pylist()
    keys = zip(second, *(table[c].to_pylist() for c in columns), strict=True)
    for received, key in zip(table["time"].cast(pa.int64()).to_pylist(), keys, strict=True):
        (before if received <= split_ns else after)[key] += 1
    return before, after


def resumed_at(
    root: layout.StoreRoot, contract_id: int, tick_type: str, after_ns: int
) -> tuple[int, int] | None:
    """(receive ns, IB second) of the stream's first live tick received at or after
    `after_ns`, or None while there is none on disk."""
    if not _has_ticks(root):
        return None
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


def missing(
    history: pa.Table, what: str, before: Counter, after: Counter | None = None
) -> list[dict]:
    """The historical rows (oldest first) that no stored tick accounts for: those stored
    before the gap matched from the front, those after it from the back (module docstring)."""
    rows = history.to_pylist()
    kept = missing_mask(history, what, before, after)
    return [row for row, keep in zip(rows, kept, strict=True) if keep]


def missing_mask(
    history: pa.Table, what: str, before: Counter, after: Counter | None = None
) -> list[bool]:
    """`missing` as a mask over the rows: True where no stored tick accounts for the row."""
    names = ["time", *(h for h, _ in MATCH[what])]
    keys = list(zip(*(history.column(n).to_pylist() for n in names), strict=True))
    taken = [False] * len(keys)
    for have, order in (
        (Counter(before), range(len(keys))),
        (Counter(after), range(len(keys) - 1, -1, -1)),
    ):
        if not have:
            continue
        for i in order:
            if not taken[i] and have[keys[i]] > 0:
                have[keys[i]] -= 1
                taken[i] = True
    return [not done for done in taken]


def receive_times(seconds: list[int], after_ns: int, before_ns: int) -> list[int]:
    """Strictly increasing stamps in (after_ns, before_ns), each as near the start of its IB
    second as that allows (see the module's docstring)."""
    return fit_stamps([second * NS for second in seconds], after_ns, before_ns)


def fit_stamps(wanted: list[int], after_ns: int, before_ns: int) -> list[int]:
    """Strictly increasing stamps in (after_ns, before_ns), each as near its `wanted` stamp
    (non-decreasing) as that allows; ValueError when they do not fit."""
    return fit_stamps_array(np.asarray(wanted, np.int64), after_ns, before_ns).tolist()


def fit_stamps_array(wanted: np.ndarray, after_ns: int, before_ns: int) -> np.ndarray:
    """`fit_stamps` on an int64 array, without a Python step per stamp: each stamp pushed
    up to one past the one before it (a running maximum of `wanted - i`), then down to one
    before the one after it (a running minimum from the end)."""
    n = len(wanted)
    if not n:
        return wanted.astype(np.int64)
    i = np.arange(n, dtype=np.int64)
    up = np.maximum.accumulate(np.maximum(wanted - i, after_ns + 1)) + i
    down = np.minimum.accumulate((np.minimum(up, before_ns - n + i) - i)[::-1])[::-1] + i
    if down[0] <= after_ns:
        raise ValueError(f"{n} ticks do not fit between {after_ns} and {before_ns} ns")
    return down


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
