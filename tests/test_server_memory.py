"""What a client can make the server hold is bounded, whatever it sends.

A client that never reads and loops `subscribe` with `resume_from {bid_ask: 0}` (a replay
of the whole ring each time) and `unsubscribe_all` used to grow the server without end:
replayed ticks skipped the queue bound and an unsubscribed stream's queued ticks stayed
queued. Now replays have their own bound (`replay_size`, the newest ticks are replayed and
the rest reported as a `replay_limit` gap) and an unsubscribe drops the stream's queue.
"""

from __future__ import annotations

import asyncio

import pytest

from ibstream.model import TickType
from ibstream.server.hub import StreamKey
from tests.conftest import AAPL, WAIT
from tests.test_server_resume import slow_socket

BID_ASK = StreamKey(AAPL, TickType.BID_ASK)
MAX_TICK_BYTES = 1024  # a queued tick takes well under this, in any message


def queued(sub) -> tuple[int, int]:
    """Ticks (other messages count one) and bytes a subscriber holds, counted afresh."""
    items = list(sub._queue)
    return sum(i.ticks for i in items) + len(sub.batcher), sum(len(i.payload) for i in items)


@pytest.mark.parametrize("batch_ms", [None, 100])
async def test_a_client_that_resumes_and_unsubscribes_without_reading_stays_bounded(
    make_server, gateway, ws_client, batch_ms
):
    queue, replay, ring = 2000, 1500, 4000
    server = await make_server(
        queue_size=queue, replay_size=replay, ring_size=ring, send_timeout=30 * WAIT
    )
    hub, connections = server.hub, server.context.connections
    keeper = await ws_client(server)
    await keeper.subscribe(AAPL, ["bid_ask"])

    async def keep_reading() -> None:  # the channel's other client reads on
        while True:
            await keeper.conn.recv()

    reader = asyncio.create_task(keep_reading())
    try:
        gateway.set_rate(4000, AAPL)
        await gateway.wait_for(lambda: hub.last_sequence(*BID_ASK) >= ring, 6 * WAIT)
        gateway.set_rate(50, AAPL)  # the ring is full: a resume from 0 replays all of it
        before = set(connections.live)
        sock = await slow_socket()
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        raw = await ws_client(server, sock=sock, max_queue=1)  # reads the greeting, no more
        (conn,) = connections.live - before
        sub = conn.subscriber
        config: dict = {"resume_from": {"bid_ask": 0}}
        if batch_ms is not None:
            config["batch_ms"] = batch_ms
        peak = (0, 0)
        for cycle in range(300):
            data = {"contract_id": AAPL, "tick_types": ["bid_ask"], "config": config}
            await raw.send({"type": "subscribe", "id": f"s{cycle}", "data": data})
            await sub.changes.wait_for(lambda: bool(sub.streams), WAIT)  # replay queued
            peak = max(peak, queued(sub))
            await raw.send({"type": "unsubscribe_all", "id": f"u{cycle}"})
            await sub.changes.wait_for(lambda: not sub.streams, WAIT)
            peak = max(peak, queued(sub))
        after = queued(sub)
    finally:
        gateway.set_rate(200, AAPL)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    assert sub.closed is None  # measured on a connection still open, never reading
    ticks, size = peak
    assert replay <= ticks <= queue + replay  # the first replay filled its bound, no more
    assert size <= (queue + replay) * MAX_TICK_BYTES
    assert after[0] < queue  # replies and gap infos (counted against queue_size) remain
    assert not [i for i in sub._queue if i.event in ("tick", "ticks")]  # no tick stayed
    assert sub.queued_ticks == after[0] - len(sub.batcher)  # the counters agree
