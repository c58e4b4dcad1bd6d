"""A replay's rows as Arrow frames (`config.format: "arrow"`, see `protocol/arrow.py`).

The rows come from Parquet as Arrow already, so a frame is built from column slices: the
float and string columns are the read batch's own buffers (no copy), receive stamps and
sequences are copied once only when a `--loop` pass shifts them, and the stream and tick
type columns are dictionary indices over the session's stream list. No per-tick Python.

The per-tick rules hold as with JSON frames: a frame is cut where a stream reaches its
`limit` (its `complete` follows its last tick, later rows of it are left out) and where a
recorded gap is due (the `info` `gap` goes between the rows before and after it); each
frame carries its streams' spans, so queue bounds, unsubscribe and SLOW_CONSUMER positions
work on it as on a `ticks` message. JSON ticks of other batched streams of the connection
that are still pending go out first, so the connection's order is arrival order.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ibstream.protocol.arrow import ARROW_TICK_SCHEMA, FLOATS, encode_frame
from ibstream.protocol.encode import Outgoing
from ibstream.store.replay.gaps import gap_info

if TYPE_CHECKING:
    from ibstream.server.stream import StreamHandle
    from ibstream.server.subscriber import Subscriber

FRAME_ROWS = 8_192  # rows per frame at most (about 0.8 MB), within the subscriber's queue


def _one(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """A column as one array: the chunk itself when there is one (no copy)."""
    if isinstance(column, pa.ChunkedArray):
        return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return column


def frame_batch(
    rows: pa.Table,
    index: np.ndarray,
    times: np.ndarray,
    sequences: np.ndarray,
    handles: list[StreamHandle],
) -> pa.RecordBatch:
    """Rows of one replay as a record batch in ARROW_TICK_SCHEMA: the fields of each tick's
    JSON `data`, plus its stream id. `index` is each row's stream in `handles`; `times` and
    `sequences` are as sent (numpy, handed to Arrow without a copy)."""
    n = rows.num_rows
    owners = pa.array(index.astype(np.int8))
    ib_time = _one(rows.column("ib_time")).view(pa.int64())
    arrays = [
        pa.DictionaryArray.from_arrays(owners, pa.array([h.stream_id for h in handles])),
        pa.array(times),
        pa.array(np.full(n, handles[0].contract.contract_id, np.int64)),
        pa.DictionaryArray.from_arrays(owners, pa.array([h.tick_type.value for h in handles])),
        pa.array(sequences),
        *(_one(rows.column(name)) for name in FLOATS),
        _one(rows.column("exchange")),
        _one(rows.column("conditions")),
        pc.divide(ib_time, 1_000_000_000),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=ARROW_TICK_SCHEMA)


def deliver_frames(
    owner: Subscriber,
    handles: list[StreamHandle],
    gaps: list[deque[dict]],
    slice_: tuple[pa.Table, np.ndarray, np.ndarray, np.ndarray],
    time_shift: int,
) -> None:
    """Hand a slice of merged rows (rows, stream index, receive times as sent, sequences as
    sent) to its streams as Arrow frames, cut at limits and recorded gaps (module doc)."""
    rows, index, times, sequences = slice_
    lo, n = 0, len(index)
    while lo < n:
        first = int(index[lo])
        queue = gaps[first]
        while queue and queue[0]["end"] <= int(times[lo]) - time_shift:
            handles[first].notify("gap", *gap_info(queue.popleft()))
        hi = min(n, lo + FRAME_ROWS, _cut(handles, gaps, index, times, lo, n, time_shift))
        active = np.array([h.active for h in handles])
        keep = active[index[lo:hi]]
        if keep.any():
            part = rows.slice(lo, hi - lo)
            own, sent, seqs = index[lo:hi], times[lo:hi], sequences[lo:hi]
            if not keep.all():
                part = part.filter(pa.array(keep))
                own, sent, seqs = own[keep], sent[keep], seqs[keep]
            _put(owner, handles, frame_batch(part, own, sent, seqs, handles), own, seqs)
        lo = hi


def _cut(
    handles: list[StreamHandle],
    gaps: list[deque[dict]],
    index: np.ndarray,
    times: np.ndarray,
    lo: int,
    n: int,
    time_shift: int,
) -> int:
    """Where the frame starting at row `lo` must end: after a stream's last row within its
    limit, or before a row a recorded gap of its stream must be told ahead of."""
    cut = n
    for k, handle in enumerate(handles):
        if not handle.active or (not gaps[k] and handle.limit is None):
            continue
        mine = lo + np.flatnonzero(index[lo:] == k)
        if gaps[k]:
            due = np.flatnonzero(times[mine] - time_shift >= gaps[k][0]["end"])
            due = due[mine[due] > lo]
            if len(due):
                cut = min(cut, int(mine[due[0]]))
        if handle.limit is not None:
            left = handle.limit - handle.count
            if left < len(mine):
                cut = min(cut, int(mine[max(left, 1) - 1]) + 1)
    return cut


def _put(
    owner: Subscriber,
    handles: list[StreamHandle],
    batch: pa.RecordBatch,
    index: np.ndarray,
    sequences: np.ndarray,
) -> None:
    """Queue one frame (after any pending JSON frame) and move its streams' counters; a
    stream that reached its limit completes right after it."""
    owner.batcher.flush()
    spans: dict[str, tuple[int, int]] = {}
    counts: list[tuple[StreamHandle, int]] = []
    for k in np.unique(index).tolist():
        mine = sequences[index == k]
        handle = handles[k]
        spans[handle.stream_id] = (int(mine[0]), int(mine[-1]))
        counts.append((handle, len(mine)))
    payload = encode_frame(batch)
    owner.put(Outgoing("ticks", payload, None, None, False, len(index), spans, binary=True))
    for handle, count in counts:
        handle.count += count
        handle.last_sequence = spans[handle.stream_id][1]
        if handle.limit is not None and handle.count >= handle.limit:
            owner.complete(handle, "limit_reached")


def is_arrow(handles: list[StreamHandle]) -> bool:
    return bool(handles) and handles[0].format == "arrow"
