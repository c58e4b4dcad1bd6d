"""Server message encoding: every message is JSON with type, stream_id, timestamp, data.

A tick is encoded once (`encode_tick`) and spliced behind each client's own `stream_id`
prefix, so fan-out to N clients costs one orjson call, not N. The same encoding also gives
the tick's item of a batched `ticks` message (behind its stream's `item_prefix`), so a
batch is a join of bytes, not a re-encode of dicts.

Replies may echo what a client sent; `encodable` makes any parsed JSON value writable (and
bounded), and `message` falls back to it, so no reply is ever lost to the encoder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

import orjson

from ibstream.errors import StreamError
from ibstream.model import Tick, iso_timestamp

PROTOCOL_VERSION = "2.0"
ECHO_CHARS = 256  # a string echoed back is clipped to this many characters
ECHO_ITEMS = 64  # items of an echoed list or object kept
ECHO_DEPTH = 8  # nesting kept; deeper values are replaced by their type name
_INT64, _UINT64 = -(2**63), 2**64 - 1  # the integers orjson can write


@dataclass(slots=True)
class Outgoing:
    """One message ready for any transport: SSE uses event/id, WebSocket only payload.
    (Not frozen: a frozen dataclass's __init__ costs several times more, once per tick.)

    `ticks` is how many ticks it carries (a batch: all of them), so queue limits count ticks
    whether a client takes them one per message or batched; other messages count as one.
    A batch holds ticks of several streams: `spans` gives each one's first and last
    sequence in it (`sequence` and `stream_id` are then None).
    """

    event: str
    payload: bytes
    sequence: int | None = None  # a tick's sequence; a batch's last one
    stream_id: str | None = None  # set on ticks, so a transport can track positions per stream
    replayed: bool = False  # replayed from the ring: counted apart from the live queue limit
    ticks: int = 1
    spans: dict[str, tuple[int, int]] | None = None
    binary: bool = False  # an Arrow frame (protocol/arrow.py): a binary WebSocket message


class EncodedTick(NamedTuple):
    """A tick encoded once: `tail` follows a `tick` message's prefix, `item` is its entry in
    a batch (the `data` object plus the tick's own `timestamp`, without the opening brace:
    it follows a stream's `item_prefix`); `recv_ns` orders ticks of several streams."""

    sequence: int
    tail: bytes
    item: bytes
    recv_ns: int = 0


class _StampCache:
    """`iso_timestamp(ns)` as bytes, with the date and time of day formatted once a second
    (strftime per tick cost more than the rest of a tick's encoding), and the whole stamp
    reused within a millisecond (the ticks of one socket read share one clock reading)."""

    __slots__ = ("second", "prefix", "milli", "last")

    def __init__(self) -> None:
        self.second = -1.0
        self.prefix = b""
        self.milli = -1
        self.last = b""

    def stamp(self, ns: int) -> bytes:
        milli, rest = divmod(ns, 1_000_000)
        # Reused only well inside the millisecond, where float rounding cannot move it.
        inside = 2_000 <= rest <= 998_000
        if milli == self.milli and inside:
            return self.last
        stamp = self._format(ns)
        if inside:
            self.milli, self.last = milli, stamp
        return stamp

    def _format(self, ns: int) -> bytes:
        # datetime.fromtimestamp(ns / 1e9)'s own rounding (half-even to the microsecond)
        fraction, second = math.modf(ns / 1e9)
        micros = round(fraction * 1e6)
        if micros >= 1_000_000:
            second, micros = second + 1, micros - 1_000_000
        if second != self.second:
            when = datetime.fromtimestamp(second, UTC)
            self.prefix = when.strftime('"timestamp":"%Y-%m-%dT%H:%M:%S.').encode()
            self.second = second
        return b'%s%03dZ"' % (self.prefix, micros // 1000)


_stamps = _StampCache()


def encode_tick(tick: Tick, sequence: int) -> EncodedTick:
    data = orjson.dumps(tick.data(sequence))
    stamp = _stamps.stamp(tick.recv_ns)
    tail = stamp + b',"data":' + data + b"}"
    return EncodedTick(sequence, tail, data[1:-1] + b"," + stamp + b"}", tick.recv_ns)


def encode_tick_tail(tick: Tick, sequence: int) -> bytes:
    """Everything of a tick message after its stream_id, as bytes."""
    return encode_tick(tick, sequence).tail


def tick_prefix(stream_id: str) -> bytes:
    return b'{"type":"tick","stream_id":' + orjson.dumps(stream_id) + b","


def item_prefix(stream_id: str) -> bytes:
    """What goes before `EncodedTick.item` in a `ticks` message: the item's stream."""
    return b'{"stream_id":' + orjson.dumps(stream_id) + b","


def batch_message(
    items: Sequence[bytes], spans: dict[str, tuple[int, int]], replayed: bool
) -> Outgoing:
    """A `ticks` message: items (`item_prefix` + `EncodedTick.item`) of one connection's
    streams in arrival order; `spans`: stream id -> (first, last) sequence in it."""
    payload = b"".join(
        (
            b'{"type":"ticks","timestamp":"',
            iso_timestamp().encode(),
            b'","data":{"ticks":[',
            b",".join(items),
            b"]}}",
        )
    )
    return Outgoing("ticks", payload, None, None, replayed, len(items), spans)


def encodable(value: object, depth: int = ECHO_DEPTH, chars: int = ECHO_CHARS) -> object:
    """`value` (parsed from a client's JSON) in a form orjson writes and a reply can carry:
    integers beyond 64 bits and non-finite floats as text (orjson refuses the first and
    writes null for the second), strings clipped to `chars`, containers to ECHO_ITEMS
    items and `depth` levels (deeper: their type name). Error details quote values with
    depth 0 (`rejections`)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if _INT64 <= value <= _UINT64 else clip(str(value), chars)
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return clip(value, chars)
    if isinstance(value, dict | list | tuple) and depth <= 0:
        return type(value).__name__
    if isinstance(value, dict):
        items = list(value.items())[:ECHO_ITEMS]
        return {clip(str(k), chars): encodable(v, depth - 1, chars) for k, v in items}
    if isinstance(value, list | tuple):
        return [encodable(v, depth - 1, chars) for v in value[:ECHO_ITEMS]]
    return clip(str(value), chars)


def clip(text: str, chars: int = ECHO_CHARS) -> str:
    """`text` cut to `chars` (then "..."), lone surrogates replaced: orjson refuses them."""
    text = text if len(text) <= chars else text[:chars] + "..."
    return text.encode("utf-8", "replace").decode("utf-8")


def message(
    type_: str,
    data: dict,
    *,
    stream_id: str | None = None,
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
    try:
        return Outgoing(type_, orjson.dumps(obj))
    except orjson.JSONEncodeError:  # something a client sent, echoed unchecked
        return Outgoing(type_, orjson.dumps(encodable(obj, depth=ECHO_DEPTH + 4)))


def error_message(
    error: StreamError, *, stream_id: str | None = None, request_id: str | int | None = None
) -> Outgoing:
    return message("error", error.body(), stream_id=stream_id, request_id=request_id)
