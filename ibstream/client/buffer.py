"""Ticks gathered as they arrive: `FrameBuilder` for one frame at the end of a collection,
`TickBuffer` for a live window that charts and widgets read while ticks keep coming.

Both take a row at the cost of a list append and a few checks, and type rows in batches
(`ibstream.client.frames.columns_from_rows`), because per-tick pandas or numpy work would
cost more than receiving the tick.
"""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Iterable, Mapping
from numbers import Integral, Real
from typing import Any

import pandas as pd

from ibstream.client.frames import TICK_TYPE_NAMES, TickColumns, TickRowError, columns_from_rows

CHUNK_ROWS = 65_536  # rows a FrameBuilder holds as dicts before typing them
BATCH_ROWS = 1_024  # rows a TickBuffer holds as dicts before moving them into its ring
FIRST_CAPACITY = 1_024


class FrameBuilder:
    """Collects tick rows for one frame.

    Every `chunk_rows` rows are typed at once, so a long collection keeps about 100 bytes
    per tick rather than a dict each, and `to_frame()` only joins the chunks. `append`
    checks tick type, recv_ns and contract_id at once; a value that is not a number is found
    when its chunk is typed, and that append (or `to_frame()`) raises `TickRowError` naming
    the row, which is left out.
    """

    def __init__(self, chunk_rows: int = CHUNK_ROWS) -> None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be a positive integer, not {chunk_rows!r}")
        self._chunk_rows = chunk_rows
        self.clear()

    def clear(self) -> None:
        self._rows: list[Mapping] = []
        self._chunks: list[TickColumns] = []
        self._typed = 0
        self._untyped = 0  # rows of Arrow frames not typed yet

    def __len__(self) -> int:
        return self._typed + len(self._rows)

    def append(self, row: Mapping) -> None:
        try:
            get = row.get
            ok = get("tick_type") in TICK_TYPE_NAMES and get("recv_ns") is not None
            ok = ok and get("contract_id") is not None
        except (AttributeError, TypeError):
            ok = False
        if not ok:
            columns_from_rows([row], len(self))  # raises naming the row, unless IB's spelling
        self._rows.append(row)
        if len(self._rows) >= self._chunk_rows:
            self._type_rows()

    def extend(self, rows: Iterable[Mapping]) -> None:
        """Append many rows: all of them, or none and a `TickRowError` (rows numbered from 0)."""
        self.extend_columns(columns_from_rows(rows if isinstance(rows, list) else list(rows)))

    def extend_columns(self, columns: TickColumns) -> None:
        """Append typed columns, after the rows appended before them."""
        if self._rows:
            self._type_rows()
        self._chunks.append(columns)
        self._typed += len(columns)

    def extend_arrow(self, table: Any) -> None:
        """Append an Arrow frame's rows (`arrow_frames`); typed together with the frames
        next to them, `chunk_rows` at a time (one conversion, not one per frame, and most
        of it done while later frames are on their way)."""
        if self._rows:
            self._type_rows()
        self._chunks.append(table)
        self._typed += table.num_rows
        self._untyped += table.num_rows
        if self._untyped >= self._chunk_rows:
            self._chunks = _typed(self._chunks)
            self._untyped = 0

    def columns(self) -> TickColumns:
        """Everything appended so far as typed columns, in new arrays."""
        if self._rows:
            self._type_rows()
        parts = _typed(self._chunks)
        return (
            parts[0]
            if len(parts) == 1 and parts[0] is not self._chunks[0]
            else (TickColumns.concat(parts))
        )

    def to_frame(self) -> pd.DataFrame:
        return self.columns().to_frame()

    def _type_rows(self) -> None:
        try:
            chunk = columns_from_rows(self._rows, self._typed)
        except TickRowError as exc:
            del self._rows[exc.row - self._typed]
            raise
        self._chunks.append(chunk)
        self._typed += len(chunk)
        self._rows = []


def _typed(chunks: list) -> list[TickColumns]:
    """The chunks as typed columns: each run of Arrow frames converted in one go."""
    out: list[TickColumns] = []
    run: list = []
    for chunk in [*chunks, None]:
        if chunk is None or isinstance(chunk, TickColumns):
            if run:
                from ibstream.client.arrow_frames import columns_from_frame

                out.append(columns_from_frame(run))
                run = []
            if chunk is not None:
                out.append(chunk)
        else:
            run.append(chunk)
    return out


class TickBuffer:
    """The last `max_ticks` ticks and/or the ticks of the last `max_seconds`, for live views.

    Ticks live in numpy ring columns that grow geometrically up to the bound, so
    `to_frame()` costs O(ticks in the window), never O(ticks seen). With `max_seconds`, the
    oldest arrivals stamped (recv_ns) more than `max_seconds` before the newest arrival are
    evicted as new ticks come, so memory follows the window's tick count. `total` counts
    every tick appended since the buffer was made (`clear()` empties only the window). Bad
    rows raise `TickRowError` as in `FrameBuilder` (and are left out). Safe for one writer
    thread and any number of reader threads.
    """

    def __init__(self, max_ticks: int | None = None, max_seconds: float | None = None) -> None:
        if max_ticks is None and max_seconds is None:
            raise ValueError(
                "TickBuffer needs max_ticks and/or max_seconds (an unbounded buffer would grow "
                "without limit; FrameBuilder keeps every tick)"
            )
        if max_ticks is not None and not (_is_number(max_ticks, Integral) and max_ticks >= 1):
            raise ValueError(f"max_ticks must be a positive integer, not {max_ticks!r}")
        if max_seconds is not None and not (
            _is_number(max_seconds, Real) and 0 < max_seconds < math.inf
        ):
            raise ValueError(f"max_seconds must be a positive number, not {max_seconds!r}")
        self.max_ticks = None if max_ticks is None else int(max_ticks)
        self.max_seconds = None if max_seconds is None else float(max_seconds)
        self._window_ns = None if max_seconds is None else round(max_seconds * 1e9)
        self._lock = threading.Lock()
        self._pending = FrameBuilder(chunk_rows=BATCH_ROWS)
        self._ring = TickColumns.empty(min(max_ticks or FIRST_CAPACITY, FIRST_CAPACITY))
        self._head = self._size = self._moved = 0
        self.contracts: list[dict] = []  # set by the client: `attrs["contracts"]` of frames

    @property
    def total(self) -> int:
        with self._lock:
            return self._moved + len(self._pending)

    @property
    def capacity(self) -> int:
        """Ticks the ring holds room for now: the memory the buffer uses."""
        with self._lock:
            return len(self._ring)

    def __len__(self) -> int:
        with self._lock:
            self._flush()
            return self._size

    def append(self, row: Mapping) -> None:
        with self._lock:
            self._pending.append(row)
            if self._pending._chunks:  # it typed a batch of BATCH_ROWS: into the ring
                self._flush()

    def extend(self, rows: Iterable[Mapping]) -> None:
        """Append many rows: all of them, or none and a `TickRowError` (rows numbered from 0)."""
        columns = columns_from_rows(rows if isinstance(rows, list) else list(rows))
        with self._lock:
            self._flush()
            self._write(columns)

    def to_frame(self) -> pd.DataFrame:
        """The ticks in the window, oldest first, as a tick frame of its own."""
        with self._lock:
            self._flush()
            window = self._window()
        frame = window.to_frame()
        if self.contracts:
            frame.attrs["contracts"] = [dict(c) for c in self.contracts]
        return frame

    def clear(self) -> None:
        with self._lock:
            self._moved += len(self._pending)
            self._pending.clear()
            self._ring.exchange[:] = None  # let go of the strings
            self._ring.conditions[:] = None
            self._head = self._size = 0

    def _flush(self) -> None:
        if len(self._pending):
            columns = self._pending.columns()
            self._pending.clear()
            self._write(columns)

    def _write(self, columns: TickColumns) -> None:
        n = len(columns)
        self._moved += n
        if not n:
            return
        if self.max_ticks is not None:
            if n > self.max_ticks:
                columns, n = columns[n - self.max_ticks :], self.max_ticks
            self._drop(max(0, self._size + n - self.max_ticks))
        if self._size + n > len(self._ring):
            capacity = max(2 * len(self._ring), self._size + n)
            self._grow(min(capacity, self.max_ticks or sys.maxsize))
        capacity = len(self._ring)
        start = (self._head + self._size) % capacity
        first = min(n, capacity - start)
        for ring, new in zip(self._ring.arrays(), columns.arrays(), strict=True):
            ring[..., start : start + first] = new[..., :first]
            ring[..., : n - first] = new[..., first:]
        self._size += n
        if self._window_ns is not None:
            self._evict_before(int(columns.recv_ns[-1]) - self._window_ns)

    def _window(self) -> TickColumns:
        """The ticks in the window, oldest first, in new arrays."""
        end = self._head + self._size
        wrapped = max(0, end - len(self._ring))
        return TickColumns.concat([self._ring[self._head : end - wrapped], self._ring[:wrapped]])

    def _grow(self, capacity: int) -> None:
        window = self._window()
        self._ring = TickColumns.empty(capacity)
        for ring, old in zip(self._ring.arrays(), window.arrays(), strict=True):
            ring[..., : self._size] = old
        self._head = 0

    def _drop(self, k: int) -> None:
        """Forget the `k` oldest ticks."""
        self._head = (self._head + k) % len(self._ring)
        self._size -= k

    def _evict_before(self, cutoff_ns: int) -> None:
        """Forget the oldest ticks stamped before `cutoff_ns`, scanning only as far as they go
        (in runs that double), so eviction costs O(ticks evicted)."""
        run = 64
        while self._size:
            start = self._head
            n = min(run, self._size, len(self._ring) - start)
            old = self._ring.recv_ns[start : start + n] < cutoff_ns
            k = n if old.all() else int(old.argmin())
            self._drop(k)
            if k < n:
                return
            run *= 2


def _is_number(value: object, kind: type) -> bool:
    return isinstance(value, kind) and not isinstance(value, bool)
