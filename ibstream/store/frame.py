"""A scan of tick parts (an Arrow table) into the tick frame of `collect`, in arrival order.

A recording holds one stream per file, so a scan is runs of rows each in time order, and a
stream fills only its own tick type's columns (a quote part's `price` is all nulls). Each
column is therefore written once, chunk by chunk, straight from Arrow's buffers to the rows
it takes in arrival order (a scatter through the inverse of the time sort); chunks that
are all nulls are never read. numpy does the moving without the GIL, so the columns are
spread over the cores.
"""

from __future__ import annotations

import os
from collections.abc import Callable
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


def frame_from_table(table: pa.Table) -> pd.DataFrame:
    """The tick frame of a table of tick columns in any row order (`time` the receive
    stamp, `contract_id`, `tick_type` and the frame's columns, as `layout.TICK_SCHEMA` and
    the partitions give them; text as strings or dictionaries), rows in arrival order (by
    `time`; equal stamps keep the table's order)."""
    n = table.num_rows
    if not n:
        return empty_ticks()
    recv = _int64s(table.column("time")).to_numpy()
    order = None if bool((recv[1:] >= recv[:-1]).all()) else np.argsort(recv, kind="stable")
    where: np.ndarray | None = None
    if order is not None:
        where = np.empty(n, np.int64)
        where[order] = np.arange(n)  # row i of the table goes to row where[i] of the frame
    ints = np.empty((len(INT_FIELDS), n), np.int64)
    floats = np.empty((len(FLOAT_FIELDS), n))
    ib_ns = np.empty(n, np.int64)
    jobs: list[Callable[[], object]] = [  # the longest first, so no core waits on one at the end
        lambda: _strings(table.column("exchange"), where),
        lambda: _strings(table.column("conditions"), where),
        lambda: _codes(table.column("tick_type"), order),
        lambda: recv if order is None else recv[order],
        *(_placer(table.column(name), row, np.nan, where) for name, row in zip(FLOAT_FIELDS, floats, strict=True)),
        *(_placer(_int64s(table.column(name)), row, 0, where) for name, row in zip(INT_FIELDS, ints, strict=True)),
        _placer(_int64s(table.column("ib_time")), ib_ns, NAT, where),
    ]  # fmt: skip
    with ThreadPoolExecutor(max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
        exchange, conditions, codes, recv, *_ = pool.map(lambda job: job(), jobs)
    return assemble(recv, codes, ints, floats, exchange, conditions, ib_ns)


def _int64s(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A timestamp or integer column as int64 (timestamps keep their buffers; a dictionary,
    as a hive partition may come, is spelled out)."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_timestamp(column.type):
        return pa.chunked_array([c.view(pa.int64()) for c in column.chunks], pa.int64())
    return column if pa.types.is_int64(column.type) else column.cast(pa.int64())


def _placer(
    column: pa.ChunkedArray, out: np.ndarray, fill: object, where: np.ndarray | None
) -> Callable[[], None]:
    """A job that writes `column` into `out` in arrival order, nulls as `fill`."""

    def place() -> None:
        if column.null_count:
            out.fill(fill)
        start = 0
        for chunk in column.chunks:
            rows = slice(start, start + len(chunk))
            start += len(chunk)
            if chunk.null_count == len(chunk):
                continue
            values = (pc.fill_null(chunk, fill) if chunk.null_count else chunk).to_numpy()
            if where is None:
                out[rows] = values
            else:
                out[where[rows]] = values

    return place


def _codes(column: pa.ChunkedArray, order: np.ndarray | None) -> np.ndarray:
    kinds = column.combine_chunks()
    kinds = kinds if pa.types.is_dictionary(kinds.type) else kinds.dictionary_encode()
    lut = [TICK_TYPE_CODES.get(name, -1) for name in kinds.dictionary.to_pylist()]
    if -1 in lut or kinds.null_count:
        names = kinds.dictionary.to_pylist()
        raise ValueError(f"tick_type holds {names}; a tick frame takes {sorted(TICK_TYPE_CODES)}")
    codes = np.array(lut, dtype=np.int8)[kinds.indices.to_numpy()]
    return codes if order is None else codes[order]


def _strings(column: pa.ChunkedArray, where: np.ndarray | None) -> pd.api.extensions.ExtensionArray:
    """A text column in arrival order: only the indices into its few distinct values move."""
    n = len(column)
    if column.null_count == n:
        strings = pa.nulls(n, pa.string())
    else:
        encoded = column.combine_chunks()
        if not pa.types.is_dictionary(encoded.type):
            encoded = encoded.dictionary_encode()
        indices = np.full(n, -1, np.int32)
        _placer(pa.chunked_array([encoded.indices]), indices, -1, where)()
        strings = pa.DictionaryArray.from_arrays(
            pa.array(indices, mask=indices < 0), encoded.dictionary
        ).dictionary_decode()
    return pd.array(strings, dtype=TICK_COLUMNS["exchange"])
