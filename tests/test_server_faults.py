"""Gateway faults under live streams: clients stay connected and are told what happened.

The simulator drops every API connection three times and refuses connections for 2 s once;
a WebSocket client and an SSE client subscribed through the server must see
`ib_disconnected` then `resumed` each time, keep their connection, and get ticks again with
sequence numbers that keep increasing.
"""

from __future__ import annotations

import asyncio

import pytest

from ibstream.model import TickType
from tests.conftest import Changes, sse, sse_events

ES = 637533641
ROUNDS = 4  # three drops, then a drop into a 2 s refusal window


class SSEWatcher(Changes):
    """Reads an SSE stream in the background, keeping every event and waking waiters."""

    def __init__(self):
        super().__init__()
        self.events: list[tuple[str, dict]] = []

    async def run(self, server, path):
        async with sse(server, path) as source:
            assert source.response.status_code == 200
            async for event, data, _ in sse_events(source, timeout=30):
                self.events.append((event, data))
                self.notify()

    def count(self, status):
        return sum(1 for e, d in self.events if e == "info" and d["data"]["status"] == status)

    def ticks_after_last(self, status):
        idx = max(
            i
            for i, (e, d) in enumerate(self.events)
            if e == "info" and d["data"]["status"] == status
        )
        return [d for e, d in self.events[idx:] if e == "tick"]


@pytest.mark.parametrize("ib_lib", ["ib_insync", "ib_async"])
async def test_streams_survive_drops_and_refusal(make_server, gateway, ws_client, ib_lib):
    server = await make_server(ib_lib=ib_lib)
    client = await ws_client(server)
    data = await client.subscribe(ES, ["bid_ask", "last"])
    streams = {s["stream_id"] for s in data["streams"]}
    watcher = SSEWatcher()
    sse_task = asyncio.create_task(watcher.run(server, f"/v2/stream/{ES}/bid_ask"))
    try:
        await watcher.until(lambda: sum(e == "tick" for e, _ in watcher.events) >= 5)
        last_seq = {t["stream_id"]: t["data"]["sequence"] for t in await client.ticks(5)}
        for round_ in range(ROUNDS):
            if round_ == ROUNDS - 1:
                gateway.refuse_connections(2.0)
            assert await gateway.drop_connections() == 1
            info = await client.expect("info", timeout=10, status="ib_disconnected")
            assert info["stream_id"] in streams
            await client.expect("info", timeout=20, status="resumed")
            for tick in await client.ticks(5, timeout=20):
                stream, seq = tick["stream_id"], tick["data"]["sequence"]
                assert seq > last_seq.get(stream, 0), "sequences restarted after a reconnect"
                last_seq[stream] = seq
            await watcher.until(lambda r=round_: watcher.count("resumed") >= r + 1, timeout=20)
        await watcher.until(lambda: len(watcher.ticks_after_last("resumed")) >= 3)
        assert gateway.refused_connections >= 1
        assert watcher.count("ib_disconnected") == ROUNDS
        assert not any(e == "complete" for e, _ in watcher.events)
        infos = [m["data"]["status"] for m in client.seen if m["type"] == "info"]
        assert infos.count("ib_disconnected") == infos.count("resumed") == ROUNDS * len(streams)
        pong = await client.request("ping", {"timestamp": "t"})
        assert pong["type"] == "pong"  # the WebSocket stayed open throughout
        assert server.source.reconnects == ROUNDS
    finally:
        sse_task.cancel()
        await asyncio.gather(sse_task, return_exceptions=True)


@pytest.mark.parametrize(
    "ib_code, code", [(10190, "RATE_LIMIT_EXCEEDED"), (354, "PERMISSION_DENIED")]
)
async def test_ib_rejection_ends_only_that_stream(server, gateway, ws_client, ib_code, code):
    client = await ws_client(server)
    keep = (await client.subscribe("AAPL", ["last"]))["streams"][0]["stream_id"]
    gateway.fail_next("tick_by_tick", ib_code)
    doomed = (await client.subscribe(ES, ["bid_ask"]))["streams"][0]["stream_id"]
    error = await client.expect("error", code=code)
    assert error["stream_id"] == doomed and error["data"]["details"]["ib_code"] == ib_code
    complete = await client.expect("complete", reason="error")
    assert complete["stream_id"] == doomed
    assert server.source.upstream == {(265598, TickType.LAST)}  # the failed one is gone upstream
    assert [t["stream_id"] for t in await client.ticks(2, keep)] == [keep, keep]
    again = (await client.subscribe(ES, ["bid_ask"]))["streams"][0]["stream_id"]
    assert len(await client.ticks(2, again)) == 2  # a later subscribe works again
