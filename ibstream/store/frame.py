"""A scan of tick parts (an Arrow table) into the tick frame of `collect`, in arrival order.

A recording holds one stream per file, so a scan is runs of rows each in time order, and a
stream fills only its own tick type's columns (a quote part's `price` is all nulls): the
reader leaves such columns out of the scan, so a scan may come as several tables, and a
column a table lacks is nulls there (and the partition keys, one value a part, may come run-end
encoded, never spelled out per row). Each column is written once, chunk by chunk, straight
from Arrow's buffers to the rows it takes in arrival order (a scatter through the inverse
of the time sort); chunks that are all nulls are never read, and each chunk is let go once
written (the tables' owner permitting), so the scan's memory shrinks as the frame's grows.
numpy does the moving without the GIL, so the columns are spread over the cores.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ibstream.client.frames import (
    FLOAT_FIELDS,
    INT_FIELDS,
    NAT,
    TICK_COLUMNS,
    TICK_TYPE_CODES,
    assemble,
    empty_ticks,
)
from ibstream.store.layout import scan_pool


class Same(NamedTuple):
    """`size` rows of one value (None: nulls) that no array spells out."""

    size: int
    value: object


Piece = pa.Array | Same  # a column of tables end to end is pieces
_JOBS = (("exchange", "conditions"), ("tick_type",), (*FLOAT_FIELDS, *INT_FIELDS, "ib_time"))
_REQUIRED = ("time", "contract_id", "tick_type")


def frame_from_table(table: pa.Table) -> pd.DataFrame:
    """The tick frame of a table of tick columns in any row order (`time` the receive
    stamp, `contract_id`, `tick_type` and the frame's columns, as `layout.TICK_SCHEMA` and
    the partitions give them; text as strings or dictionaries), rows in arrival order (by
    `time`; equal stamps keep the table's order)."""
    return frame_from_tables([table])


def frame_from_tables(tables: Sequence[pa.Table]) -> pd.DataFrame:
    """The tick frame of tables end to end, as `frame_from_table` of their rows one after
    the other; a column a table lacks (except `time`, `contract_id` and `tick_type`) is all
    nulls in its rows, and any column may come run-end encoded."""
    n = sum(t.num_rows for t in tables)
    if not n:
        return empty_ticks()
    ints = np.empty((len(INT_FIELDS), n), np.int64)
    floats = np.empty((len(FLOAT_FIELDS), n))
    ib_ns = np.empty(n, np.int64)
    recv = np.empty(n, np.int64)
    _placer(_pieces(tables, "time", required=True), recv, 0, None)()
    where: np.ndarray | None = None
    if not bool((recv[1:] >= recv[:-1]).all()):
        order = np.argsort(recv, kind="stable")
        where, recv = recv, recv[order]  # the table's stamps are done with: where takes their room
        where[order] = _counting(ib_ns)  # row i of the tables goes to row where[i] of the frame
        del order
    text, kinds, numbers = (
        [_pieces(tables, name, required=name in _REQUIRED) for name in names] for names in _JOBS
    )
    del tables  # from here each job holds its column's buffers alone and drops them when done
    rows = [*floats, *ints, ib_ns]
    fills = [*(np.nan for _ in floats), 0, 0, NAT]
    jobs: list[Callable[[], object]] = [  # the longest first, so no core waits on one at the end
        lambda: _strings(text[0], where),
        lambda: _strings(text[1], where),
        lambda: _codes(kinds[0], n, where),
        *(_placer(p, row, fill, where) for p, row, fill in zip(numbers, rows, fills, strict=True)),
    ]
    with ThreadPoolExecutor(max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
        exchange, conditions, codes, *_ = pool.map(lambda job: job(), jobs)
    return assemble(recv, codes, ints, floats, exchange, conditions, ib_ns)


def _counting(room: np.ndarray) -> np.ndarray:
    """0, 1, 2 ... written over `room` (a column filled later): no fresh memory to fault in."""
    room.fill(1)
    room[:1] = 0
    return np.cumsum(room, out=room)


def _pieces(tables: Sequence[pa.Table], name: str, *, required: bool = False) -> list[Piece]:
    """Column `name` of the tables end to end (integers and timestamps as int64); a table
    without it (`required`: a KeyError) and a run-end encoded one-value chunk give `Same`."""
    pieces: list[Piece] = []
    for table in tables:
        if name not in table.column_names and not required:
            pieces.append(Same(table.num_rows, None))
            continue
        for chunk in table.column(name).chunks:
            if pa.types.is_run_end_encoded(chunk.type):
                if len(chunk.values) == 1 and chunk.offset == 0:
                    pieces.append(Same(len(chunk), chunk.values[0].as_py()))
                    continue
                chunk = pc.run_end_decode(chunk)
            pieces.append(_int64s(chunk))
    return pieces


def _int64s(chunk: pa.Array) -> pa.Array:
    """A timestamp or integer column as int64 (timestamps keep their buffers; a dictionary,
    as a hive partition may come, is spelled out); other columns as they are."""
    if pa.types.is_dictionary(chunk.type) and pa.types.is_integer(chunk.type.value_type):
        chunk = chunk.cast(chunk.type.value_type)
    if pa.types.is_timestamp(chunk.type):
        return chunk.view(pa.int64())
    if pa.types.is_integer(chunk.type) and not pa.types.is_int64(chunk.type):
        return chunk.cast(pa.int64())
    return chunk


def _placer(
    pieces: list[Piece], out: np.ndarray, fill: object, where: np.ndarray | None
) -> Callable[[], None]:
    """A job that writes the pieces into `out` in arrival order, nulls as `fill`, taking
    them out of `pieces` as it goes: the scan's buffers go while the frame's later columns
    are being written, whose pages the kernel then hands out warm (fresh ones cost most)."""

    def place() -> None:
        same = {p.value for p in pieces if isinstance(p, Same)}
        if len(same) == 1 and all(isinstance(p, Same) for p in pieces):
            out.fill(fill if None in same else same.pop())  # one value throughout
            pieces.clear()
            return
        if None in same or any(not isinstance(p, Same) and p.null_count for p in pieces):
            out.fill(fill)
        start = 0
        pieces.reverse()
        while pieces:  # each piece let go as soon as it is written
            piece = pieces.pop()
            size = piece.size if isinstance(piece, Same) else len(piece)
            rows = slice(start, start + size)
            start += size
            if isinstance(piece, Same):
                if piece.value is None:
                    continue
                values = piece.value
            elif piece.null_count == size:
                continue
            else:
                values = (pc.fill_null(piece, fill) if piece.null_count else piece).to_numpy()
            out[rows if where is None else where[rows]] = values

    return place


def _codes(pieces: list[Piece], n: int, where: np.ndarray | None) -> np.ndarray:
    """tick_type category codes in arrival order; a name not ours or IB's is refused."""
    coded: list[Piece] = []
    for piece in pieces:
        if isinstance(piece, Same):
            names = [piece.value]
            coded.append(Same(piece.size, _lut(names, 0)[0]))
            continue
        kinds = piece if pa.types.is_dictionary(piece.type) else piece.dictionary_encode()
        lut = _lut(kinds.dictionary.to_pylist(), kinds.null_count)
        coded.append(pa.array(lut[kinds.indices.to_numpy()]))
    pieces.clear()
    codes = np.empty(n, np.int8)
    _placer(coded, codes, 0, where)()
    return codes


def _lut(names: list, nulls: int) -> np.ndarray:
    lut = [TICK_TYPE_CODES.get(name, -1) for name in names]
    if -1 in lut or nulls:
        raise ValueError(f"tick_type holds {names}; a tick frame takes {sorted(TICK_TYPE_CODES)}")
    return np.array(lut, dtype=np.int8)


def _strings(column: list[Piece], where: np.ndarray | None) -> pd.api.extensions.ExtensionArray:
    """A text column in arrival order: only the indices into its few distinct values move.
    `column` is emptied (its buffers held here only while needed)."""
    pieces = [pa.repeat(pa.scalar(p.value, pa.string()), p.size) if isinstance(p, Same) and p.value is not None else p for p in column]  # fmt: skip
    column.clear()
    chunks = [p for p in pieces if not isinstance(p, Same) and p.null_count < len(p)]
    n = sum(p.size if isinstance(p, Same) else len(p) for p in pieces)
    if not chunks:
        strings = pa.nulls(n, pa.large_string(), memory_pool=scan_pool())
    else:
        encoded = pa.chunked_array(chunks).combine_chunks()  # one dictionary for all
        if not pa.types.is_dictionary(encoded.type):
            encoded = encoded.dictionary_encode()
        slots = pa.concat_arrays(  # the values, then a null that every missing row takes
            [encoded.dictionary.cast(pa.large_string()), pa.nulls(1, pa.large_string())]
        )
        indices: list[Piece] = []
        start = 0
        for piece in pieces:
            size = piece.size if isinstance(piece, Same) else len(piece)
            if isinstance(piece, Same) or piece.null_count == size:
                indices.append(Same(size, None))
            else:
                indices.append(encoded.indices.slice(start, size))
                start += size
        rows = np.empty(n, np.int32)
        del pieces, chunks, encoded
        _placer(indices, rows, len(slots) - 1, where)()
        strings = pc.take(slots, pa.array(rows), memory_pool=scan_pool())
    return pd.array(strings, dtype=TICK_COLUMNS["exchange"])
