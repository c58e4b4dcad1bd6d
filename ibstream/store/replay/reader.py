"""The rows one replay sends: each stream's parts read in batches (never a whole day in
memory), the streams merged in their recorded arrival order, each row encoded as the live
hub encodes a tick, so a replayed message is byte for byte the recorded stream's.

Exactly in arrival order: a batch of rows is only sent once every stream has been read past
its last row (rows up to the smallest `time` any stream has read so far), then ordered by
(time, the stream's place in the subscribe); equal receive stamps of one stream keep their
recorded order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ibstream.model import Tick, TickType
from ibstream.protocol.encode import EncodedTick, encode_tick
from ibstream.store.replay.footers import StreamKey
from ibstream.store.replay.recording import Recording
from ibstream.store.replay.runs import Cursor

log = logging.getLogger(__name__)
BATCH_ROWS = 8_192  # rows read from a part at a time, per stream
FLOATS = ("price", "size", "bid_price", "bid_size", "ask_price", "ask_size", "mid_price")
COLUMNS = ["time", "sequence", *FLOATS, "exchange", "conditions", "ib_time"]
_NEVER = np.iinfo(np.int64).max


@dataclass(frozen=True)
class Window:
    """Which rows of one stream a replay sends: time in [start, end), sequence > after."""

    start_ns: int = 0
    end_ns: int | None = None
    after: int = -1


def stream_batches(recording: Recording, key: StreamKey, window: Window) -> Iterator[pa.Table]:
    """The stream's rows in the window, part after part, BATCH_ROWS at a time, sequences as
    replayed (`runs`). A part that turns out unreadable past its footer is skipped (with a
    warning naming it) from there."""
    end = _NEVER if window.end_ns is None else window.end_ns
    runs = recording.runs.get(key)
    if runs is None:
        return
    columns = COLUMNS if runs.single else [*COLUMNS, "server_id"]
    for part in recording.parts[key]:
        if part.last_ns < window.start_ns or part.first_ns >= end:
            continue
        if runs.part_last[part.path] <= window.after:
            continue
        cursor = Cursor(runs, part)
        try:
            with recording.root.fs.open_input_file(part.path) as source:
                for batch in pq.ParquetFile(source).iter_batches(BATCH_ROWS, columns=columns):
                    table = _replayed(batch, cursor, window.start_ns, end, window.after)
                    if table is not None:
                        yield table
        except (OSError, pa.ArrowException) as exc:
            log.warning("skipping the rest of unreadable part %s (%s)", part.path, exc)


def _replayed(
    batch: pa.RecordBatch, cursor: Cursor, start: int, end: int, after: int
) -> pa.Table | None:
    """A batch's rows in the window, with their sequences as replayed; None if none is."""
    ids = batch.column("server_id").to_pylist() if "server_id" in batch.schema.names else None
    sequences = cursor.shift(batch.column(1).to_numpy(), ids)
    table = pa.Table.from_batches([batch]).set_column(1, "sequence", pa.array(sequences))
    times = batch.column(0).cast(pa.int64()).to_numpy()
    keep = (times >= start) & (times < end) & (sequences > after)
    if keep.all():
        return table
    return table.filter(pa.array(keep)) if keep.any() else None


class Merge:
    """Several streams' rows as one sequence of chunks in recorded arrival order; each
    stream is read in a worker thread, so a slow disk or bucket never blocks the loop."""

    def __init__(self, sources: list[Iterator[pa.Table]]):
        self.sources = sources
        self.tables: list[pa.Table | None] = [None] * len(sources)
        self.times = [np.empty(0, np.int64) for _ in sources]
        self.done = [False] * len(sources)

    async def chunks(self) -> AsyncIterator[tuple[pa.Table, np.ndarray]]:
        """(rows in arrival order, the stream index of each row), until every stream ends."""
        while True:
            for i in range(len(self.sources)):
                if not self.done[i] and not len(self.times[i]):
                    await self._pull(i)
            live = [i for i in range(len(self.sources)) if len(self.times[i]) or not self.done[i]]
            if not live:
                return
            bounds = {i: _NEVER if self.done[i] else int(self.times[i][-1]) for i in live}
            cut = min(bounds.values())
            take = {
                i: len(self.times[i])
                if cut == _NEVER
                else int(np.searchsorted(self.times[i], cut, "left"))
                for i in live
            }
            if not any(take.values()):  # every row read so far is at `cut`: read further
                for i in live:
                    if bounds[i] == cut:
                        await self._pull(i)
                continue
            yield self._cut(take)

    def _cut(self, take: dict[int, int]) -> tuple[pa.Table, np.ndarray]:
        parts, times, owners = [], [], []
        for i, n in take.items():
            if not n:
                continue
            table = self.tables[i]
            assert table is not None
            parts.append(table.slice(0, n))
            times.append(self.times[i][:n])
            owners.append(np.full(n, i, np.int64))
            self.tables[i] = table.slice(n)
            self.times[i] = self.times[i][n:]
        rows = pa.concat_tables(parts, promote_options="default")
        order_by, index = np.concatenate(times), np.concatenate(owners)
        if len(parts) == 1:
            return rows, index
        order = np.lexsort((index, order_by))  # by time, then stream; stable within a stream
        return rows.take(order), index[order]

    async def _pull(self, i: int) -> None:
        table = await asyncio.to_thread(next, self.sources[i], None)
        if table is None:
            self.done[i] = True
            return
        times = table.column("time").cast(pa.int64()).to_numpy()
        held = self.tables[i]
        self.tables[i] = (
            table
            if held is None or not held.num_rows
            else pa.concat_tables([held, table], promote_options="default")
        )
        self.times[i] = np.concatenate([self.times[i], times])


def encode_rows(
    rows: pa.Table,
    index: np.ndarray,
    contract_id: int,
    tick_types: list[TickType],
    time_shift: int = 0,
    sequence_shift: list[int] | None = None,
) -> list[EncodedTick]:
    """Each row as the live hub encodes its tick (`encode_tick`): the same `data`, stamp
    and sequence. Shifts move a `--loop` pass after the one before it."""
    recv = rows.column("time").cast(pa.int64()).to_numpy() + time_shift
    sequences = rows.column("sequence").to_numpy()
    if sequence_shift is not None and any(sequence_shift):
        sequences = sequences + np.asarray(sequence_shift, np.int64)[index]
    ib_time = pc.divide(rows.column("ib_time").cast(pa.int64()), 1_000_000_000)
    columns = [rows.column(name).to_pylist() for name in FLOATS]
    kinds = [tick_types[i] for i in index.tolist()]
    return [
        encode_tick(Tick(contract_id, kind, ns, *values), seq)
        for kind, ns, seq, *values in zip(
            kinds,
            recv.tolist(),
            sequences.tolist(),
            *columns,
            rows.column("exchange").to_pylist(),
            rows.column("conditions").to_pylist(),
            ib_time.to_pylist(),
            strict=True,
        )
    ]
