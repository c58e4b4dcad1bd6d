"""Arrow tick frames (`format="arrow"`, see `protocol/arrow.py`) on the client side.

A binary frame is decoded once into the typed columns `collect` builds its frame from
(`TickColumns`, through `columns_from_arrow`, the tick store's own path), then split into
the runs of rows of one subscription, in arrival order, as a `ticks` message's items are.
Sinks that take ticks one by one (iterators, callbacks) get the same `data` dicts a JSON
frame gives them (nulls left out), built only for them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ibstream.client.frames import TICK_TYPE_DTYPE, TickColumns, columns_from_arrow
from ibstream.client.sinks import put_many
from ibstream.protocol.arrow import decode_frame

if TYPE_CHECKING:
    from ibstream.client.subscription import Subscription

Part = tuple[TickColumns, pa.Table]  # the same rows as typed columns and as the frame's table


def columns_from_frame(table: pa.Table) -> TickColumns:
    """A frame's rows as tick columns: the wire's `recv_ns` / `ib_time` (seconds) renamed
    and scaled to the stored layout, then the store's conversion."""
    ib_ns = pc.multiply(table.column("ib_time"), 1_000_000_000)
    stored = table.rename_columns(["time" if n == "recv_ns" else n for n in table.column_names])
    stored = stored.set_column(stored.schema.get_field_index("ib_time"), "ib_time", ib_ns)
    return columns_from_arrow(stored)


def split_frame(payload: bytes, owner_of: Callable[[str], Hashable | None]) -> list[tuple]:
    """(owner, columns, table) for each run of rows of one owner (`owner_of(stream_id)`),
    in arrival order; rows of streams without an owner (no longer bound) are left out."""
    table = decode_frame(payload)
    if not table.num_rows:
        return []
    stream = table.column("stream_id").combine_chunks()
    subs = [owner_of(sid) for sid in stream.dictionary.to_pylist()]
    distinct = list({id(s): s for s in subs if s is not None}.values())
    slot = {id(s): n for n, s in enumerate(distinct)}
    lut = np.array([-1 if s is None else slot[id(s)] for s in subs] or [-1])
    per_row = lut[stream.indices.to_numpy()]
    if per_row.min() < 0 and per_row.max() < 0:
        return []
    columns = columns_from_frame(table)
    starts = [0, *(np.flatnonzero(np.diff(per_row)) + 1).tolist()]
    ends = [*starts[1:], len(per_row)]
    return [
        (distinct[per_row[lo]], columns[lo:hi], table.slice(lo, hi - lo))
        for lo, hi in zip(starts, ends, strict=True)
        if per_row[lo] >= 0
    ]


_NAMES = np.array(list(TICK_TYPE_DTYPE.categories), dtype=object)


def tick_type_names(columns: TickColumns) -> list[str]:
    return _NAMES[columns.codes].tolist()


def deliver(sub: Subscription, part: Part) -> None:
    """Rows of one subscription: rows it has had are dropped and holes reported, per tick
    type, exactly as for JSON items (a frame that just follows on is checked in numpy); a
    sink with `put_columns` (collect) takes the columns, any other the tick dicts."""
    columns, table = part
    if not sub.active or not len(columns):
        return
    spans = contiguous_spans(columns)
    if spans is None or not sub._advance(spans):
        fresh = sub._fresh(tick_type_names(columns), columns.ints[1].tolist())
        if not all(fresh):
            columns, table = keep_rows(part, fresh)
    if len(columns):
        sub.received += len(columns)
        take = getattr(sub.sink, "put_columns", None)
        overflow = take(columns) if take is not None else put_many(sub.sink, tick_dicts(table))
        if overflow is not None:
            sub._fail_loudly(overflow)


def contiguous_spans(columns: TickColumns) -> dict[str, tuple[int, int]] | None:
    """Each tick type's (first, last) sequence when its rows have no hole, else None."""
    codes, sequences = columns.codes, columns.ints[1]
    kinds = np.unique(codes).tolist()
    spans = {}
    for code in kinds:
        mine = sequences if len(kinds) == 1 else sequences[codes == code]
        if len(mine) > 1 and not (np.diff(mine) == 1).all():
            return None
        spans[_NAMES[code]] = (int(mine[0]), int(mine[-1]))
    return spans


def keep_rows(part: Part, mask: list[bool]) -> Part:
    columns, table = part
    keep = np.array(mask, dtype=bool)
    return columns[keep], table.filter(pa.array(keep))  # type: ignore[index]


def tick_dicts(table: pa.Table) -> list[dict]:
    """The rows as tick `data` dicts, as JSON frames give them (no stream_id, no nulls)."""
    rows = table.drop_columns(["stream_id"]).to_pylist()
    return [{k: v for k, v in row.items() if v is not None} for row in rows]
