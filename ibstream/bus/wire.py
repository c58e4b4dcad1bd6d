"""What goes on the bus: subjects, the JetStream stream, message ids, the tick body.

Ticks travel on `ibstream.ticks.<contract_id>.<tick_type>` (the wire tick type: `last`,
`bid_ask` ...), source events (IB connection lost / back, a stream's error, a source start)
on `ibstream.events.<server_id>`: both in one JetStream stream, so a consumer of
`ibstream.>` sees them in the order the source published them. Control requests (contract
lookup, holding a stream upstream) are core NATS request / reply on `ibstream.control.*`.

A tick message is a pack: the ticks of one stream that arrived within the publisher's
gathering window (about a millisecond), so NATS stores one message where a busy stream has
dozens of ticks (a message costs nats-server and the source's client far more than its
bytes). Its body is a 21-byte head (the source's `server_id` as 16 ASCII characters, flags,
the tick count), then per tick a 28-byte record head (sequence, receive ns, the source's
ordinal of the tick across all streams, the tail's length) and the source's own encoding,
done once (`protocol/encode.py` `EncodedTick.tail`: `"timestamp":...,"data":{...}}`), so an
edge fans it out without parsing JSON. The packs of one window hold the streams' ticks side
by side; the last pack of a window carries `END` and a consumer that needs the source's
order across streams (an edge) merges a window's packs by ordinal. The message id
(`server_id.contract.tick_type.first sequence`) makes a re-published pack (a retry after a
lost ack, a reconnect: packs never change once made) a no-op inside JetStream's duplicate
window; a restarted source has a new `server_id`, so its ticks are new messages.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from ibstream.errors import StreamError
from ibstream.model import TickType
from ibstream.protocol.encode import EncodedTick

STREAM = "IBSTREAM"  # the JetStream stream holding ticks and events
TICKS = "ibstream.ticks"
EVENTS = "ibstream.events"
CONTROL = "ibstream.control"
SUBJECTS = [f"{TICKS}.>", f"{EVENTS}.>"]
MSG_ID = "Nats-Msg-Id"  # JetStream's de-duplication header
_PACK = struct.Struct("<16sBI")  # server_id, flags, tick count
_RECORD = struct.Struct("<qqqI")  # sequence, recv_ns, ordinal, tail length
SERVER_ID_CHARS = 16
END = 1  # flag: the last pack of a gathering window
PACK_TICKS = 1_000  # ticks in one message at most (about 200 kB: under NATS's 1 MB payload)


class BusTick(NamedTuple):
    """A tick as it came off the bus: its stream, the source's numbering and its encoding."""

    contract_id: int
    tick_type: TickType
    server_id: str
    entry: EncodedTick


def tick_subject(contract_id: int, tick_type: TickType | str) -> str:
    return f"{TICKS}.{int(contract_id)}.{TickType.parse(tick_type).value}"


def event_subject(server_id: str) -> str:
    return f"{EVENTS}.{server_id}"


def control_subject(action: str) -> str:
    return f"{CONTROL}.{action}"


def message_id(server_id: str, contract_id: int, tick_type: TickType, sequence: int) -> str:
    return f"{server_id}.{contract_id}.{tick_type.value}.{sequence}"


def tick_record(entry: EncodedTick, ordinal: int) -> bytes:
    """One tick of a pack: its record head, then the tick message's tail."""
    tail = entry.tail
    return _RECORD.pack(entry.sequence, entry.recv_ns, ordinal, len(tail)) + tail


def pack_body(server_id: str, records: list[bytes], end: bool) -> bytes:
    """The body of a tick message: the pack's head, then its ticks' records in order."""
    return _PACK.pack(server_id.encode(), END if end else 0, len(records)) + b"".join(records)


class Pack(NamedTuple):
    """A tick message as it came off the bus: its ticks in order, each tick's ordinal, and
    whether it ends its gathering window."""

    ticks: list[BusTick]
    ordinals: list[int]
    end: bool


def parse_pack(subject: str, body: bytes) -> Pack:
    """A tick message back into its stream's `BusTick`s (no JSON parsed: each batched `item`
    is cut from its tail, whose layout `encode_tick` fixes). ValueError if malformed: a
    subject or head that does not hold, a record past the body's end, sequences that do not
    follow one another, bytes left over."""
    parts = subject.split(".")
    if len(parts) != 4 or f"{parts[0]}.{parts[1]}" != TICKS or not parts[2].isdigit():
        raise ValueError(f"not a tick subject: {subject!r}")
    try:
        contract_id, tick_type = int(parts[2]), TickType.parse(parts[3])
    except StreamError as exc:
        raise ValueError(exc.message) from None
    if len(body) < _PACK.size:
        raise ValueError(f"tick body of {len(body)} bytes is too short")
    server_raw, flags, count = _PACK.unpack_from(body)
    server = server_raw.decode()
    if not 0 < count <= PACK_TICKS:
        raise ValueError(f"a tick message holds 1 to {PACK_TICKS} ticks, not {count}")
    ticks: list[BusTick] = []
    ordinals: list[int] = []
    at, size, record = _PACK.size, len(body), _RECORD
    for _ in range(count):
        if at + record.size > size:
            raise ValueError("a tick record runs past the end of its message")
        sequence, recv_ns, ordinal, length = record.unpack_from(body, at)
        at += record.size
        if ticks and sequence != ticks[-1].entry.sequence + 1:
            raise ValueError(f"sequence {sequence} does not follow {ticks[-1].entry.sequence}")
        tail = body[at : at + length]
        at += length
        cut = tail.find(b',"data":')
        if len(tail) != length or cut < 0 or not tail.endswith(b"}}"):
            raise ValueError("a tick record does not hold a tick message tail")
        stamp, data = tail[:cut], tail[cut + 8 : -1]  # data: the `data` object with its braces
        item = data[1:-1] + b"," + stamp + b"}"
        entry = EncodedTick(sequence, tail, item, recv_ns)
        ticks.append(BusTick(contract_id, tick_type, server, entry))
        ordinals.append(ordinal)
    if at != size:
        raise ValueError(f"{size - at} bytes after the last tick record")
    return Pack(ticks, ordinals, bool(flags & END))
