"""A scan of tick parts (an Arrow table) into the tick frame of `collect`, in arrival order.

A recording holds one stream per file, so a scan is runs of rows each in time order, and a
stream fills only its own tick type's columns (a quote part's `price` is all nulls): the
reader leaves such columns out of the scan, so a scan may come as several tables, and a
column a table lacks is nulls there. Each column is written once, chunk by chunk, straight
from Arrow's buffers to the rows it takes in arrival order (a scatter through the inverse
of the time sort); chunks that are all nulls are never read. numpy does the moving without
the GIL, so the columns are spread over the cores.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

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

Piece = pa.Array | int  # a chunk of a column, or the row count of a table without it (nulls)


def frame_from_table(table: pa.Table) -> pd.DataFrame:
    """The tick frame of a table of tick columns in any row order (`time` the receive
    stamp, `contract_id`, `tick_type` and the frame's columns, as `layout.TICK_SCHEMA` and
    the partitions give them; text as strings or dictionaries), rows in arrival order (by
    `time`; equal stamps keep the table's order)."""
    return frame_from_tables([table])


def frame_from_tables(tables: Sequence[pa.Table]) -> pd.DataFrame:
    """The tick frame of tables end to end, as `frame_from_table` of their rows one after
    the other; a column a table lacks (except `time`, `contract_id` and `tick_type`) is all
    nulls in its rows."""
    n = sum(t.num_rows for t in tables)
    if not n:
        return empty_ticks()
    recv = np.empty(n, np.int64)
    _placer(_chunks(tables, "time"), recv, 0, None)()
    order = None if bool((recv[1:] >= recv[:-1]).all()) else np.argsort(recv, kind="stable")
    where: np.ndarray | None = None
    if order is not None:
        where = np.empty(n, np.int64)
        where[order] = np.arange(n)  # row i of the tables goes to row where[i] of the frame
    ints = np.empty((len(INT_FIELDS), n), np.int64)
    floats = np.empty((len(FLOAT_FIELDS), n))
    ib_ns = np.empty(n, np.int64)
    kinds = _chunks(tables, "tick_type")
    jobs: list[Callable[[], object]] = [  # the longest first, so no core waits on one at the end
        lambda: _strings(_pieces(tables, "exchange"), where),
        lambda: _strings(_pieces(tables, "conditions"), where),
        lambda: _codes(kinds, n, order),
        lambda: recv if order is None else recv[order],
        *(_placer(_pieces(tables, name), row, np.nan, where) for name, row in zip(FLOAT_FIELDS, floats, strict=True)),
        _placer(_chunks(tables, "contract_id"), ints[0], 0, where),
        _placer(_pieces(tables, "sequence"), ints[1], 0, where),
        _placer(_pieces(tables, "ib_time"), ib_ns, NAT, where),
    ]  # fmt: skip
    with ThreadPoolExecutor(max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
        exchange, conditions, codes, recv, *_ = pool.map(lambda job: job(), jobs)
    return assemble(recv, codes, ints, floats, exchange, conditions, ib_ns)


def _pieces(tables: Sequence[pa.Table], name: str) -> list[Piece]:
    """Column `name` of the tables end to end as chunks (`_int64s`); a table without it
    gives its row count instead."""
    pieces: list[Piece] = []
    for table in tables:
        if name in table.column_names:
            pieces.extend(_int64s(table.column(name)).chunks)
        elif table.num_rows:
            pieces.append(table.num_rows)
    return pieces


def _chunks(tables: Sequence[pa.Table], name: str) -> list[pa.Array]:
    """Column `name`, which every table has (else a KeyError), end to end as chunks."""
    return [chunk for table in tables for chunk in _int64s(table.column(name)).chunks]


def _int64s(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A timestamp or integer column as int64 (timestamps keep their buffers; a dictionary,
    as a hive partition may come, is spelled out); other columns as they are."""
    if pa.types.is_dictionary(column.type) and pa.types.is_integer(column.type.value_type):
        column = column.cast(column.type.value_type)
    if pa.types.is_timestamp(column.type):
        return pa.chunked_array([c.view(pa.int64()) for c in column.chunks], pa.int64())
    if pa.types.is_integer(column.type) and not pa.types.is_int64(column.type):
        return column.cast(pa.int64())
    return column


def _placer(
    pieces: Sequence[Piece], out: np.ndarray, fill: object, where: np.ndarray | None
) -> Callable[[], None]:
    """A job that writes the pieces into `out` in arrival order, nulls as `fill`."""

    def place() -> None:
        if any(isinstance(p, int) or p.null_count for p in pieces):
            out.fill(fill)
        start = 0
        for piece in pieces:
            size = piece if isinstance(piece, int) else len(piece)
            rows = slice(start, start + size)
            start += size
            if isinstance(piece, int) or piece.null_count == size:
                continue
            values = (pc.fill_null(piece, fill) if piece.null_count else piece).to_numpy()
            if where is None:
                out[rows] = values
            else:
                out[where[rows]] = values

    return place


def _codes(chunks: list[pa.Array], n: int, order: np.ndarray | None) -> np.ndarray:
    codes = np.empty(n, np.int8)
    start = 0
    for chunk in chunks:
        kinds = chunk if pa.types.is_dictionary(chunk.type) else chunk.dictionary_encode()
        names = kinds.dictionary.to_pylist()
        lut = [TICK_TYPE_CODES.get(name, -1) for name in names]
        if -1 in lut or kinds.null_count:
            raise ValueError(
                f"tick_type holds {names}; a tick frame takes {sorted(TICK_TYPE_CODES)}"
            )
        codes[start : start + len(kinds)] = np.array(lut, dtype=np.int8)[kinds.indices.to_numpy()]
        start += len(kinds)
    return codes if order is None else codes[order]


def _strings(pieces: list[Piece], where: np.ndarray | None) -> pd.api.extensions.ExtensionArray:
    """A text column in arrival order: only the indices into its few distinct values move."""
    chunks = [p for p in pieces if not isinstance(p, int) and p.null_count < len(p)]
    n = sum(p if isinstance(p, int) else len(p) for p in pieces)
    if not chunks:
        strings = pa.nulls(n, pa.large_string())
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
            size = piece if isinstance(piece, int) else len(piece)
            if isinstance(piece, int) or piece.null_count == size:
                indices.append(size)
            else:
                indices.append(encoded.indices.slice(start, size))
                start += size
        rows = np.empty(n, np.int32)
        _placer(indices, rows, len(slots) - 1, where)()
        strings = slots.take(pa.array(rows))
    return pd.array(strings, dtype=TICK_COLUMNS["exchange"])
