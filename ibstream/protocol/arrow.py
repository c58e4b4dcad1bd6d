"""The opt-in binary tick frame: one Arrow IPC stream holding one record batch of ticks.

A subscribe with `config.format: "arrow"` (and `batch_ms`) on a server that can build them
(a replay server: its ticks come from Parquet as Arrow already) gets its ticks as binary
WebSocket messages in this layout instead of JSON `ticks` messages; every other message
stays JSON text. Each row is one tick with the fields of a tick message's `data` (same
names and units: `recv_ns` in ns, `ib_time` in epoch seconds, nulls where JSON omits a
field) plus `stream_id`, the stream it belongs to (dictionary encoded: a frame names each
stream once). Rows are in arrival order, as the items of a `ticks` message. Each frame is
a complete IPC stream (schema, dictionaries, the batch, end marker), so a client decodes
any frame on its own (`pyarrow.ipc.open_stream`, or any Arrow library).
"""

from __future__ import annotations

import pyarrow as pa

FORMATS = ("json", "arrow")
FLOATS = ("price", "size", "bid_price", "bid_size", "ask_price", "ask_size", "mid_price")
ARROW_TICK_SCHEMA = pa.schema(
    [
        ("stream_id", pa.dictionary(pa.int8(), pa.string())),
        ("recv_ns", pa.int64()),
        ("contract_id", pa.int64()),
        ("tick_type", pa.dictionary(pa.int8(), pa.string())),
        ("sequence", pa.int64()),
        *((name, pa.float64()) for name in FLOATS),
        ("exchange", pa.string()),
        ("conditions", pa.string()),
        ("ib_time", pa.int64()),
    ]
)
IPC_MARK = b"\xff\xff\xff\xff"  # how every Arrow IPC stream message begins (JSON never does)


def encode_frame(batch: pa.RecordBatch) -> bytes:
    """A record batch in ARROW_TICK_SCHEMA as one self-contained IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, ARROW_TICK_SCHEMA) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def decode_frame(payload: bytes) -> pa.Table:
    """The ticks of one frame; ValueError if it is not a frame in ARROW_TICK_SCHEMA."""
    try:
        table = pa.ipc.open_stream(payload).read_all()
    except pa.ArrowException as exc:
        raise ValueError(f"not an Arrow IPC tick frame ({exc})") from None
    if not table.schema.equals(ARROW_TICK_SCHEMA):
        raise ValueError(f"an Arrow frame with unexpected columns: {table.schema.names}")
    return table


def is_arrow_frame(payload: bytes) -> bool:
    return payload[:4] == IPC_MARK
