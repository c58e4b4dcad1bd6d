"""Rows of a string column without copying its characters, where Arrow's layout allows it.

Arrow keeps a string column as one run of characters plus an offset per row. Trades take
their `exchange` from the tick frame, where the rows left out between trades (quotes) hold
no characters: the trades' strings are then one stretch of that run, and the trades column
can share it, with new offsets only (and so keeps it alive as long as it lives). Copying a
million exchange names would cost about a fifth of classifying them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

STRING = pd.StringDtype()


def take_strings(column: pd.Series | None, rows: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """`column` at the ascending `rows`, as a `pd.StringDtype()` array; all missing if None."""
    if column is None:
        return pd.arrays.ArrowStringArray(pa.nulls(len(rows), pa.large_string()))
    values = column.array
    if values.dtype != STRING:
        values = pd.array(values, dtype=STRING)
    shared = _shared(values, rows)
    return values.take(rows) if shared is None else shared


def _shared(values: pd.api.extensions.ExtensionArray, rows: np.ndarray) -> object:
    """`values` at `rows` sharing the characters of `values`; None where it cannot."""
    chunks = values.__arrow_array__().chunks
    if len(chunks) != 1 or not len(rows) or chunks[0].type != pa.large_string():
        return None
    chunk = chunks[0]
    validity, offsets, data = chunk.buffers()
    if data is None:
        return None
    offsets = np.frombuffer(offsets, np.int64, len(chunk) + 1, chunk.offset * 8)
    bounds = np.empty(len(rows) + 1, dtype=np.int64)  # the new offsets: each row's start,
    starts = offsets.take(rows, out=bounds[:-1], mode="clip")  # then the last one's end
    ends = offsets[1:].take(rows)
    if not np.array_equal(starts[1:], ends[:-1]):  # a row left out holds characters
        return None
    bounds[-1] = ends[-1]
    kept, nulls = None, 0
    if validity is not None and chunk.null_count:
        bits = np.unpackbits(
            np.frombuffer(validity, np.uint8), count=chunk.offset + len(chunk), bitorder="little"
        )
        valid = bits[chunk.offset :].take(rows)
        nulls = len(rows) - int(np.count_nonzero(valid))
        kept = pa.py_buffer(np.packbits(valid, bitorder="little"))
    array = pa.Array.from_buffers(
        pa.large_string(), len(rows), [kept, pa.py_buffer(bounds), data], null_count=nulls
    )
    return pd.arrays.ArrowStringArray(array)
