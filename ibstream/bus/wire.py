"""What goes on the bus: subjects, the JetStream stream, message ids, the tick body.

Ticks travel on `ibstream.ticks.<contract_id>.<tick_type>` (the wire tick type: `last`,
`bid_ask` ...), source events (IB connection lost / back, a stream's error, a source start)
on `ibstream.events.<server_id>`: both in one JetStream stream, so a consumer of
`ibstream.>` sees them in the order the source published them. Control requests (contract
lookup, holding a stream upstream) are core NATS request / reply on `ibstream.control.*`.

A tick's body is the source's own encoding, done once (`protocol/encode.py` `EncodedTick`):
a fixed 32-byte head (sequence, receive ns, the source's `server_id` as 16 ASCII characters)
then the tick message's tail (`"timestamp":...,"data":{...}}`), so an edge fans it out
without parsing JSON. The message id (`server_id.contract.tick_type.sequence`) makes a
re-published tick (a retry after a lost ack, a reconnect) a no-op inside JetStream's
duplicate window; a restarted source has a new `server_id`, so its ticks are new messages.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from ibstream.model import TickType
from ibstream.protocol.encode import EncodedTick

STREAM = "IBSTREAM"  # the JetStream stream holding ticks and events
TICKS = "ibstream.ticks"
EVENTS = "ibstream.events"
CONTROL = "ibstream.control"
SUBJECTS = [f"{TICKS}.>", f"{EVENTS}.>"]
MSG_ID = "Nats-Msg-Id"  # JetStream's de-duplication header
_HEAD = struct.Struct("<qq16s")  # sequence, recv_ns, server_id
SERVER_ID_CHARS = 16


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


def tick_body(server_id: str, entry: EncodedTick) -> bytes:
    """The body of a tick message: the fixed head, then the tick message's tail."""
    return _HEAD.pack(entry.sequence, entry.recv_ns, server_id.encode()) + entry.tail


def parse_tick(subject: str, body: bytes) -> BusTick:
    """A tick message back into its stream and `EncodedTick` (no JSON parsed: the batched
    `item` is cut from the tail, whose layout `encode_tick` fixes). ValueError if malformed."""
    parts = subject.split(".")
    if len(parts) != 4 or f"{parts[0]}.{parts[1]}" != TICKS:
        raise ValueError(f"not a tick subject: {subject!r}")
    if len(body) <= _HEAD.size:
        raise ValueError(f"tick body of {len(body)} bytes is too short")
    sequence, recv_ns, server = _HEAD.unpack_from(body)
    tail = body[_HEAD.size :]
    cut = tail.find(b',"data":')
    if cut < 0 or not tail.endswith(b"}}"):
        raise ValueError("tick body does not hold a tick message tail")
    stamp, data = tail[:cut], tail[cut + 8 : -1]  # data: the `data` object with its braces
    item = data[1:-1] + b"," + stamp + b"}"
    entry = EncodedTick(sequence, tail, item, recv_ns)
    return BusTick(int(parts[2]), TickType.parse(parts[3]), server.decode(), entry)
