"""Server message encoding: every message is JSON with type, stream_id, timestamp, data.

A tick is encoded once (`encode_tick_tail`) and spliced behind each client's own
`stream_id` prefix, so fan-out to N clients costs one orjson call, not N.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from ibstream.errors import StreamError
from ibstream.model import Tick, iso_timestamp

PROTOCOL_VERSION = "2.0"


@dataclass(slots=True, frozen=True)
class Outgoing:
    """One message ready for any transport: SSE uses event/id, WebSocket only payload."""

    event: str
    payload: bytes
    sequence: int | None = None
    stream_id: str | None = None  # set on ticks, so a transport can track positions per stream
    replayed: bool = False  # replayed from the ring: counted apart from the live queue limit


def encode_tick_tail(tick: Tick, sequence: int) -> bytes:
    """Everything of a tick message after its stream_id, as bytes."""
    body = orjson.dumps({"timestamp": iso_timestamp(tick.recv_ns), "data": tick.data(sequence)})
    return body[1:]  # drop '{': the prefix opens the object


def tick_prefix(stream_id: str) -> bytes:
    return b'{"type":"tick","stream_id":' + orjson.dumps(stream_id) + b","


def message(
    type_: str,
    data: dict,
    *,
    stream_id: str | None = None,
    metadata: dict | None = None,
    request_id: str | int | None = None,
) -> Outgoing:
    """Build a non-tick message (info, error, complete, subscribed, pong ...).

    A reply to a request echoes its `id` at the top level, as sent (string or number), and
    in `data.request_id` for clients written against earlier versions of this server.
    """
    obj: dict = {"type": type_}
    if request_id is not None:
        obj["id"] = request_id
        data = {**data, "request_id": request_id}
    if stream_id is not None:
        obj["stream_id"] = stream_id
    obj["timestamp"] = iso_timestamp()
    obj["data"] = {k: v for k, v in data.items() if v is not None}
    if metadata:
        obj["metadata"] = metadata
    return Outgoing(type_, orjson.dumps(obj))


def error_message(
    error: StreamError, *, stream_id: str | None = None, request_id: str | int | None = None
) -> Outgoing:
    return message("error", error.body(), stream_id=stream_id, request_id=request_id)
