"""A run of history ticks as columns (an Arrow table of the history wire schema), so the
history path does its work once per page, not once per tick: IB pages and store slices become
`Ticks` once, are merged and cut with numpy, go out as Arrow batches as they are, and become
the wire's tick objects (nulls omitted) only where JSON is asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ibstream.protocol.arrow import ARROW_TICK_SCHEMA

SCHEMA = ARROW_TICK_SCHEMA.append(pa.field("source", pa.string()))
NAMES = tuple(f.name for f in SCHEMA)
WIRE = ("contract_id", "tick_type", "sequence", "recv_ns", *NAMES[5:])  # a tick object's keys
_EMPTY = SCHEMA.empty_table()
_LABELS = ("stream_id", "tick_type")  # dictionary-encoded: the tick type, as stream id too


def _labels(values: Any, n: int) -> pa.Array:
    """A tick type (one for all rows, one a row, or a DictionaryArray already) as the
    schema's dictionary column."""
    if isinstance(values, pa.DictionaryArray):
        return values
    if isinstance(values, str):
        return pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(n, np.int8)), pa.array([values], pa.string())
        )
    return pa.array(values, pa.string()).dictionary_encode().cast(SCHEMA.field(_LABELS[0]).type)


def labels_of(codes: np.ndarray, names: Sequence[str]) -> pa.DictionaryArray:
    """The tick type column of rows whose tick type is `names[code]`, built from the codes
    (no string a row)."""
    return pa.DictionaryArray.from_arrays(
        pa.array(codes.astype(np.int8, copy=False)), pa.array(list(names), pa.string())
    )


class Ticks:
    """Ticks oldest first (by `recv_ns`) as one Arrow table of `SCHEMA`."""

    __slots__ = ("_recv", "table")

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self._recv: np.ndarray | None = None

    @classmethod
    def empty(cls) -> Ticks:
        return cls(_EMPTY)

    @classmethod
    def from_columns(cls, n: int, tick_type: Any, columns: Mapping[str, Any]) -> Ticks:
        """`n` ticks from column values (numpy, lists or Arrow arrays; a scalar for all
        rows); columns not given are null, `sequence` 0; `tick_type`: one, one a row, or a dictionary column (`labels_of`)."""
        labels = _labels(tick_type, n)
        arrays = []
        for f in SCHEMA:
            if f.name in _LABELS:
                arrays.append(labels)
                continue
            value = columns.get(f.name, 0 if f.name == "sequence" else None)
            if value is None:
                arrays.append(pa.nulls(n, f.type))
            elif np.isscalar(value):
                arrays.append(pa.repeat(pa.scalar(value, f.type), n))
            else:
                arrays.append(pa.array(value, f.type))
        return cls(pa.Table.from_arrays(arrays, schema=SCHEMA))

    @classmethod
    def from_dicts(cls, ticks: Sequence[dict]) -> Ticks:
        """Wire tick objects (as `to_dicts` gives them) as columns."""
        columns = {n: [t.get(n) for t in ticks] for n in NAMES if n not in _LABELS}
        columns["sequence"] = [v or 0 for v in columns["sequence"]]
        return cls.from_columns(len(ticks), [t.get("tick_type") for t in ticks], columns)

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def recv_ns(self) -> np.ndarray:
        if self._recv is None:
            self._recv = self.table.column("recv_ns").to_numpy()
        return self._recv

    def __getitem__(self, s: slice) -> Ticks:
        start, stop, _ = s.indices(len(self))
        out = Ticks(self.table.slice(start, max(0, stop - start)))
        if self._recv is not None:
            out._recv = self._recv[start:stop]
        return out

    @classmethod
    def concat(cls, runs: Sequence[Ticks]) -> Ticks:
        """Consecutive runs (each after the one before) as one."""
        runs = [r for r in runs if len(r)]
        if len(runs) <= 1:
            return runs[0] if runs else cls.empty()
        return cls(pa.concat_tables([r.table for r in runs]))

    @classmethod
    def merge(cls, runs: Sequence[Ticks]) -> Ticks:
        """Runs each oldest first as one, oldest first; equal times keep the runs' order."""
        runs = [r for r in runs if len(r)]
        if len(runs) <= 1:
            return runs[0] if runs else cls.empty()
        table = pa.concat_tables([r.table for r in runs])
        recv = np.concatenate([r.recv_ns for r in runs])
        order = np.argsort(recv, kind="stable")
        out = cls(table.take(order))
        out._recv = recv[order]
        return out

    def count(self, column: str, value: object) -> int:
        """How many rows have `value` in `column`."""
        return int(pc.sum(pc.equal(self.table.column(column), value)).as_py() or 0)

    def batch(self) -> pa.RecordBatch:
        """The ticks as one record batch of `SCHEMA` (for the Arrow answer)."""
        table = self.table.combine_chunks()
        batches = table.to_batches()
        return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=SCHEMA)

    def to_dicts(self) -> list[dict]:
        """The wire's tick objects: nulls (and empty texts) omitted."""
        columns = [self.table.column(n).to_pylist() for n in WIRE]
        out = []
        for row in zip(*columns, strict=True):
            out.append({k: v for k, v in zip(WIRE, row, strict=True) if v is not None and v != ""})
        return out


def json_default(value: object) -> object:
    """orjson's `default`: `Ticks` as the wire's list of tick objects."""
    if isinstance(value, Ticks):
        return value.to_dicts()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
