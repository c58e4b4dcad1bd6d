"""Arrow tick frames (`format="arrow"`, see `protocol/arrow.py`) on the client side.

A binary frame is decoded once and split into the runs of rows of one subscription, in
arrival order, as a `ticks` message's items are. A subscription checks a run's positions
from two columns (tick type codes and sequences, in numpy) and hands the rows on as Arrow:
`collect` keeps the tables and types them all in one go when it builds the frame
(`columns_from_frame`, through the JSON path's own `columns_from_struct`), so a frame costs
no per-tick Python on the way in. Sinks that take ticks one by one (iterators, callbacks)
get the same `data` dicts a JSON frame gives them (nulls left out), built only for them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ibstream.client.frames import (
    TICK_TYPE_CODES,
    TICK_TYPE_DTYPE,
    TickColumns,
    columns_from_struct,
)
from ibstream.client.sinks import put_many
from ibstream.protocol.arrow import decode_frame

if TYPE_CHECKING:
    from ibstream.client.subscription import Subscription

_NAMES = np.array(list(TICK_TYPE_DTYPE.categories), dtype=object)  # by category code


def columns_from_frame(tables: Sequence[pa.Table]) -> TickColumns:
    """Frames' rows as tick columns in one conversion: without `stream_id`, a frame's
    columns are the wire's tick `data` fields in their order, so the JSON path's own
    `columns_from_struct` types them."""
    table = pa.concat_tables(tables) if len(tables) != 1 else tables[0]
    columns = columns_from_struct(table.drop_columns(["stream_id"]).to_struct_array())
    if columns is None:
        raise ValueError("an Arrow frame holds rows a tick frame cannot take")
    return columns


def split_frame(payload: bytes, owner_of: Callable[[str], Hashable | None]) -> list[tuple]:
    """(owner, rows) for each run of rows of one owner (`owner_of(stream_id)`), in arrival
    order; rows of streams without an owner (no longer bound) are left out."""
    table = decode_frame(payload)
    if not table.num_rows:
        return []
    stream = table.column("stream_id").combine_chunks()
    subs = [owner_of(sid) for sid in stream.dictionary.to_pylist()]
    distinct = list({id(s): s for s in subs if s is not None}.values())
    if len(distinct) == 1 and None not in subs:  # the usual frame: one subscribe's streams
        return [(distinct[0], table)]
    slot = {id(s): n for n, s in enumerate(distinct)}
    lut = np.array([-1 if s is None else slot[id(s)] for s in subs] or [-1])
    per_row = lut[stream.indices.to_numpy()]
    starts = [0, *(np.flatnonzero(np.diff(per_row)) + 1).tolist()]
    ends = [*starts[1:], len(per_row)]
    return [
        (distinct[per_row[lo]], table.slice(lo, hi - lo))
        for lo, hi in zip(starts, ends, strict=True)
        if per_row[lo] >= 0
    ]


def deliver(sub: Subscription, table: pa.Table) -> None:
    """Rows of one subscription: rows it has had are dropped and holes reported, per tick
    type, exactly as for JSON items (a run that just follows on is checked in numpy); a
    sink with `put_frame` (collect) takes the rows as they are, any other the tick dicts."""
    if not sub.active or not table.num_rows:
        return
    codes, sequences = positions(table)
    spans = contiguous_spans(codes, sequences)
    if spans is None or not sub._advance(spans):
        fresh = sub._fresh(_NAMES[codes].tolist(), sequences.tolist())
        if not all(fresh):
            table = table.filter(pa.array(fresh, pa.bool_()))
    if table.num_rows:
        sub.received += table.num_rows
        take = getattr(sub.sink, "put_frame", None)
        overflow = take(table) if take is not None else put_many(sub.sink, tick_dicts(table))
        if overflow is not None:
            sub._fail_loudly(overflow)


def positions(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Tick type category codes and sequences of the rows."""
    kinds = table.column("tick_type").combine_chunks()
    lut = np.array([TICK_TYPE_CODES[name] for name in kinds.dictionary.to_pylist()] or [0], np.int8)
    return lut[kinds.indices.to_numpy()], table.column("sequence").to_numpy()


def contiguous_spans(codes: np.ndarray, sequences: np.ndarray) -> dict | None:
    """Each tick type's (first, last) sequence when its rows have no hole, else None."""
    kinds = np.unique(codes).tolist()
    spans = {}
    for code in kinds:
        mine = sequences if len(kinds) == 1 else sequences[codes == code]
        if len(mine) > 1 and not (np.diff(mine) == 1).all():
            return None
        spans[_NAMES[code]] = (int(mine[0]), int(mine[-1]))
    return spans


def tick_dicts(table: pa.Table) -> list[dict]:
    """The rows as tick `data` dicts, as JSON frames give them (no stream_id, no nulls)."""
    rows = table.drop_columns(["stream_id"]).to_pylist()
    return [{k: v for k, v in row.items() if v is not None} for row in rows]
