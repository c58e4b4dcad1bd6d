"""Where an edge starts reading the bus: stream sequences found by event subject and by time.

After NATS itself went down, the stream sequence the edge got to is not a safe place to go
on from: a node that comes back without its newest writes gives the messages published
again (the source re-sends what was not acknowledged) those sequences anew. Stored times do
not go back, so after an outage the edge starts again at the first message stored at or
after the last one it had (NATS's own clock), and drops what it already has (per-stream tick
sequences, event numbers).
"""

from __future__ import annotations

import datetime
import time
from typing import Any

import orjson

from ibstream.bus import wire

_MSG_GET = "$JS.API.STREAM.MSG.GET." + wire.STREAM


async def newest_run(js: Any) -> int:
    """The stream sequence of the newest source run's first event (the first message of
    the newest `ibstream.events.<server_id>` subject); the stream's first when it has none."""
    info = await js.stream_info(wire.STREAM, subjects_filter=f"{wire.EVENTS}.>")
    newest: tuple[int, str] | None = None
    for subject in info.state.subjects or {}:
        last = await js.get_last_msg(wire.STREAM, subject)
        if newest is None or last.seq > newest[0]:
            newest = (last.seq, subject)
    if newest is None:
        return max(1, info.state.first_seq)
    first = await js.get_msg(wire.STREAM, seq=1, subject=newest[1], next=True)
    return int(first.seq)


async def run_start(nc: Any, js: Any, catch_up: float) -> int:
    """Where an edge starts: the newest run's first event, or the first message of the last
    `catch_up` seconds when the run is older (its rings hold the newest ticks anyway)."""
    start = await newest_run(js)
    since = time.time_ns() - int(catch_up * 1e9)
    return max(start, await first_since(nc, js, since))


def stamp_of(reply: str | None) -> int | None:
    """A JetStream message's stored time (ns, NATS's clock) from its reply subject
    (`$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ns>.<pending>`)."""
    if not reply:
        return None
    tokens = reply.split(".")
    try:
        return int(tokens[-2])
    except (IndexError, ValueError):
        return None


async def first_since(nc: Any, js: Any, stamp_ns: int, timeout: float = 5.0) -> int:
    """The sequence of the first message stored at or after `stamp_ns`; when there is none
    yet, the sequence the next message will take."""
    when = datetime.datetime.fromtimestamp(stamp_ns // 1_000_000_000, datetime.UTC)
    iso = when.strftime("%Y-%m-%dT%H:%M:%S") + f".{stamp_ns % 1_000_000_000:09d}Z"
    reply = await nc.request(_MSG_GET, orjson.dumps({"start_time": iso}), timeout=timeout)
    answer = orjson.loads(reply.data)
    found = answer.get("message") if isinstance(answer, dict) else None
    if isinstance(found, dict) and isinstance(found.get("seq"), int):
        return found["seq"]
    info = await js.stream_info(wire.STREAM)
    return info.state.last_seq + 1
