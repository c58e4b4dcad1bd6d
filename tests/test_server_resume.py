"""Resume for a client that was alone on its stream, and what the server says when it cannot.

A channel outlives its last client by `channel_grace_seconds`: it keeps receiving and
numbering IB's ticks, so a lone client (WebSocket `resume_from`, or a browser's SSE
`Last-Event-ID`) that comes back within it gets every tick it missed, without a gap.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from ibstream.cli import build_parser, serve_settings
from ibstream.model import TickType
from ibstream.server.hub import StreamKey
from tests.conftest import AAPL, WAIT, assert_contiguous, get_json, sse, sse_events, upstream

BID_ASK = StreamKey(AAPL, TickType.BID_ASK)
LAST = StreamKey(AAPL, TickType.LAST)


async def no_clients(server) -> None:
    """Until the server has let go of every stream connection (the client left)."""
    connections = server.context.connections
    await connections.wait_for(lambda: connections.limiter.total == 0, WAIT)


async def ticks_while_away(server, gateway, key: StreamKey, since: int, n: int = 10) -> None:
    """Until the idle channel has numbered n ticks after `since` (re-checked per market batch)."""
    hub = server.hub
    await gateway.wait_for(lambda: hub.last_sequence(*key) >= since + n, WAIT)


def idle_channel(stats: dict, key: StreamKey) -> dict:
    (channel,) = [
        c
        for c in stats["hub"]["channels"]
        if (c["contract_id"], c["tick_type"]) == (key.contract_id, key.tick_type.value)
    ]
    return channel


async def test_lone_ws_client_resumes_within_grace_without_gap(server, gateway, ws_client):
    client = await ws_client(server)
    await client.subscribe(AAPL, ["bid_ask"])
    last = (await client.ticks(10))[-1]["data"]["sequence"]
    (before,) = upstream(gateway, AAPL, "BidAsk")
    await client.close()
    await no_clients(server)
    await ticks_while_away(server, gateway, BID_ASK, last)
    _, stats = await get_json(server, "/ws/stats")
    channel = idle_channel(stats, BID_ASK)
    assert channel["clients"] == 0 and channel["idle_until"].endswith("Z")
    assert stats["hub"]["idle_streams"] == 1
    missed = server.hub.last_sequence(*BID_ASK) - last

    back = await ws_client(server)
    data = await back.subscribe(AAPL, ["bid_ask"], resume_from=last)
    assert data["config"]["resume_from"] == {"bid_ask": last}
    got = [t["data"]["sequence"] for t in await back.ticks(missed + 5)]
    assert got[0] == last + 1
    assert_contiguous(got)
    assert not [m for m in back.seen if m["type"] == "info"]  # no gap reported
    assert upstream(gateway, AAPL, "BidAsk") == [before]  # the same IB request all along
    assert idle_channel((await get_json(server, "/ws/stats"))[1], BID_ASK).get("idle_until") is None


async def test_lone_sse_client_resumes_with_last_event_id(server, gateway):
    path = f"/v2/stream/{AAPL}/bid_ask"
    async with sse(server, path) as source:
        async for event, _, event_id in sse_events(source):
            if event == "tick" and int(event_id) >= 5:
                break
    last = int(event_id)
    await no_clients(server)
    await ticks_while_away(server, gateway, BID_ASK, last)
    async with sse(server, path + "?limit=30", headers={"Last-Event-ID": event_id}) as source:
        events = [e async for e in sse_events(source)]
    assert [e[0] for e in events] == ["subscribed"] + ["tick"] * 30 + ["complete"]  # no info
    got = [e[1]["data"]["sequence"] for e in events if e[0] == "tick"]
    assert got == list(range(last + 1, last + 31))
    assert [int(e[2]) for e in events if e[0] == "tick"] == got


async def test_lone_sse_client_resumes_every_type_with_last_event_id(server, gateway):
    path = f"/v2/stream/{AAPL}?tick_types=bid_ask,last"
    first: dict[str, list[int]] = {"bid_ask": [], "last": []}
    async with sse(server, path) as source:
        async for event, data, event_id in sse_events(source):
            if event == "tick":
                first[data["data"]["tick_type"]].append(data["data"]["sequence"])
                last_id = event_id
                if min(len(v) for v in first.values()) >= 3:
                    break
    assert last_id == f"bid_ask:{first['bid_ask'][-1]},last:{first['last'][-1]}"
    await no_clients(server)
    for key in (BID_ASK, LAST):
        await ticks_while_away(server, gateway, key, first[key.tick_type.value][-1], 3)
    second: dict[str, list[int]] = {"bid_ask": [], "last": []}
    async with sse(server, path + "&limit=5", headers={"Last-Event-ID": last_id}) as source:
        async for event, data, _ in sse_events(source):
            assert event != "info", data  # the channels stayed open: no gap
            if event == "tick":
                second[data["data"]["tick_type"]].append(data["data"]["sequence"])
    for tick_type, seqs in second.items():
        assert seqs == list(range(first[tick_type][-1] + 1, first[tick_type][-1] + 6)), tick_type


async def test_grace_expiry_cancels_upstream_and_later_resumes_report_the_gap(
    make_server, gateway, ws_client
):
    server = await make_server(channel_grace_seconds=0.5)
    client = await ws_client(server)
    stream = (await client.subscribe(AAPL, ["bid_ask"]))["streams"][0]["stream_id"]
    last = (await client.ticks(3))[-1]["data"]["sequence"]
    reply = await client.request("unsubscribe", {"stream_id": stream})
    assert reply["type"] == "unsubscribed"
    assert BID_ASK in server.source.upstream  # held on for the grace period
    assert server.hub.stats()["channels"][0]["clients"] == 0
    await gateway.wait_for(lambda: not upstream(gateway, AAPL, "BidAsk"), WAIT)
    assert server.hub.channels == {} and server.source.upstream == set()
    _, stats = await get_json(server, "/ws/stats")
    assert stats["hub"]["upstream_streams"] == 0 and stats["hub"]["idle_streams"] == 0

    await client.subscribe(AAPL, ["bid_ask"], resume_from=last)
    first_tick = await client.expect("tick")  # gap infos come before any replayed tick
    gaps = [m["data"]["details"] for m in client.seen if m["type"] == "info"]
    assert "upstream_idle" in [g["reason"] for g in gaps]
    assert first_tick["data"]["sequence"] > last


async def test_a_client_back_within_grace_keeps_the_upstream_request(
    make_server, gateway, ws_client
):
    grace = 0.5
    server = await make_server(channel_grace_seconds=grace)
    client = await ws_client(server)
    stream = (await client.subscribe(AAPL, ["bid_ask"]))["streams"][0]["stream_id"]
    (before,) = upstream(gateway, AAPL, "BidAsk")
    await client.request("unsubscribe", {"stream_id": stream})
    left_ns = time.time_ns()
    stream = (await client.subscribe(AAPL, ["bid_ask"]))["streams"][0]["stream_id"]
    deadline_ns = left_ns + int(3 * grace * 1e9)
    async with asyncio.timeout(WAIT):  # read until ticks are stamped well past the grace
        while (await client.ticks(1, stream))[0]["data"]["recv_ns"] < deadline_ns:
            pass
    assert upstream(gateway, AAPL, "BidAsk") == [before]  # never cancelled nor requested anew
    assert server.hub.channels[BID_ASK].expiry is None


async def test_idle_channel_is_resubscribed_after_ib_reconnect_and_expires(
    server, gateway, ws_client
):
    client = await ws_client(server)
    await client.subscribe(AAPL, ["bid_ask"])
    last = (await client.ticks(5))[-1]["data"]["sequence"]
    await client.close()
    await no_clients(server)
    assert await gateway.drop_connections() == 1
    await gateway.wait_for(lambda: len(upstream(gateway, AAPL, "BidAsk")) == 1, WAIT)
    dropped_at = server.hub.channels[BID_ASK].outages[-1]
    await ticks_while_away(server, gateway, BID_ASK, dropped_at, 5)

    back = await ws_client(server)
    await back.subscribe(AAPL, ["bid_ask"], resume_from=last)
    gap = await back.expect("info", status="gap")
    assert gap["data"]["details"] == {"reason": "ib_disconnected", "after_sequences": [dropped_at]}
    got = [t["data"]["sequence"] for t in await back.ticks(dropped_at - last + 5)]
    assert got[0] == last + 1
    assert_contiguous(got)

    server.hub.grace_seconds = 0.3  # the next idle period ends soon
    await back.close()
    await gateway.wait_for(lambda: not upstream(gateway, AAPL, "BidAsk"), WAIT)
    assert server.hub.channels == {} and server.source.upstream == set()


async def test_shutdown_cancels_grace_timers_and_idle_upstream(make_server, ws_client):
    server = await make_server()
    client = await ws_client(server)
    await client.subscribe(AAPL, ["bid_ask"])
    await client.ticks(1)
    await client.close()
    await no_clients(server)
    pending = server.hub.channels[BID_ASK].expiry
    assert pending is not None and not pending.cancelled()
    await server.stop()
    assert pending.cancelled()
    assert server.hub.channels == {} and server.source.upstream == set()


async def slow_socket() -> socket.socket:
    """A client socket with a tiny receive buffer: it backs up after a few KiB unread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    return sock


async def test_slow_consumer_reports_the_resume_position_of_an_unsent_stream(
    make_server, gateway, ws_client
):
    """A resumed stream that sent nothing yet reports its resume position as `last_sent`.

    The client resumes bid_ask from 0 (a replay far bigger than every socket buffer on the
    way) and last from an earlier position, then stops reading: the server's writer blocks
    inside the bid_ask replay, live ticks fill the queue, and the client is cut off before
    any `last` tick went out.
    """
    queue = 300
    server = await make_server(
        queue_size=queue, send_timeout=3 * WAIT, socket_send_buffer=4096, ring_size=10_000
    )
    hub = server.hub
    keeper = await ws_client(server)
    await keeper.subscribe(AAPL, ["bid_ask", "last"])

    async def keep_reading() -> None:  # the keeper reads on, so only the slow client backs up
        while True:
            await keeper.conn.recv()  # (cancelling a bare recv is safe; one in wait_for is not)

    reader = asyncio.create_task(keep_reading())
    gateway.set_rate(1500, AAPL)
    connections = server.context.connections
    try:
        await gateway.wait_for(lambda: hub.last_sequence(*BID_ASK) >= 2500, 6 * WAIT)
        resume_last = hub.last_sequence(*LAST) - 5
        assert resume_last > 0
        sock = await slow_socket()
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        before = set(connections.live)
        slow = await ws_client(server, sock=sock, max_queue=1)
        (conn,) = connections.live - before
        config = {"resume_from": {"bid_ask": 0, "last": resume_last}}
        data = await slow.subscribe(AAPL, ["bid_ask", "last"], **config)
        joined_last = hub.last_sequence(*LAST)
        assert joined_last > resume_last

        # Live ticks fill this client's queue (its connection is released at once). Read
        # nothing before: a client that reads keeps up and is never cut off. (Waiting for
        # any slow consumer raced: under load the keeper, on this test's loop, could be cut
        # first, and this client then read on and kept up: no 1008 ever came.)
        await connections.wait_for(lambda: conn not in connections.live, WAIT)
        assert conn.subscriber.closed is not None
        assert conn.subscriber.closed.code == "SLOW_CONSUMER"
        code, got = await slow.closed()
    finally:
        gateway.set_rate(200, AAPL)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    assert code == 1008
    error = got[-1]
    assert error["type"] == "error" and error["data"]["code"] == "SLOW_CONSUMER"
    assert "id" not in error  # not a reply to a request
    streams = {s["tick_type"]: s["stream_id"] for s in data["streams"]}
    ticks = [m for m in slow.seen + got if m["type"] == "tick"]
    assert ticks and all(t["stream_id"] == streams["bid_ask"] for t in ticks)  # no `last` sent
    assert error["data"]["details"]["last_sent"] == {
        "bid_ask": ticks[-1]["data"]["sequence"],  # the last one handed to the socket
        "last": resume_last,  # what the client already had, not where it joined
    }


def test_serve_channel_grace_flag():
    parser = build_parser()
    assert serve_settings(parser.parse_args(["serve"])).channel_grace_seconds == 30.0
    args = parser.parse_args(["serve", "--channel-grace", "2.5"])
    assert serve_settings(args).channel_grace_seconds == 2.5
    assert (
        serve_settings(parser.parse_args(["serve", "--channel-grace", "0"])).channel_grace_seconds
        == 0
    )
    for bad in ("-1", "soon", "nan"):
        with pytest.raises(SystemExit):
            parser.parse_args(["serve", "--channel-grace", bad])
