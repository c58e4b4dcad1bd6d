"""Bad input and limits: each gets its documented error or close code, and a bystander
client on the same server keeps receiving ticks after every one of them."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import socket

import orjson
import psutil
import pytest
import websockets

from tests.conftest import AAPL, EURUSD, WAIT, get_json, sse, sse_events

ES, MNQ = 637533641, 654503320


@pytest.fixture
async def limited(make_server):
    """A server with the production limits (10 connections per IP, 20 streams each)."""
    return await make_server(max_connections_per_ip=10)


@pytest.fixture
async def bystander(limited, ws_client):
    client = await ws_client(limited)
    await client.subscribe(EURUSD, ["bid_ask"])
    await client.ticks(1)
    return client


async def still_streaming(client) -> None:
    """The bystander receives fresh ticks, and its sequence has no gap."""
    ticks = await client.ticks(3)
    seqs = [m["data"]["sequence"] for m in client.seen if m["type"] == "tick"]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert ticks


async def test_unknown_contract_keeps_connection(limited, bystander, ws_client):
    client = await ws_client(limited)
    reply = await client.request("subscribe", {"contract_id": "NOSUCH", "tick_types": ["last"]})
    assert reply["type"] == "error"
    assert reply["data"]["code"] == "CONTRACT_NOT_FOUND" and reply["data"]["recoverable"] is False
    assert (await client.request("ping"))["type"] == "pong"  # connection still open
    await still_streaming(bystander)


async def test_unknown_tick_type(limited, bystander, ws_client):
    client = await ws_client(limited)
    reply = await client.request("subscribe", {"contract_id": AAPL, "tick_types": ["trades"]})
    assert reply["data"]["code"] == "INVALID_TICK_TYPE"
    assert "trades" in reply["data"]["message"] and "bid_ask" in reply["data"]["message"]
    assert (await client.request("ping"))["type"] == "pong"
    await still_streaming(bystander)


async def test_malformed_json_and_missing_field(limited, bystander, ws_client):
    client = await ws_client(limited)
    await client.send('{"type": "subscribe", "id": ')
    err = await client.expect("error")
    assert err["data"]["code"] == "INVALID_MESSAGE" and "malformed JSON" in err["data"]["message"]
    reply = await client.request("subscribe", {"tick_types": ["last"]})
    assert reply["type"] == "error" and reply["data"]["code"] == "INVALID_MESSAGE"
    assert reply["data"]["details"]["field"] == "data.contract_id"
    assert "data.contract_id" in reply["data"]["message"]
    reply = await client.request(
        "subscribe", {"contract_id": AAPL, "tick_types": ["last"], "config": {"limit": -1}}
    )
    assert reply["data"]["details"]["field"] == "data.config.limit"
    data = await client.subscribe(AAPL, ["last"], limit=2)  # still usable afterwards
    assert data["streams"][0]["tick_type"] == "last"
    await still_streaming(bystander)


async def test_oversized_message_closes_1009(limited, bystander, ws_client):
    client = await ws_client(limited)
    await client.send(orjson.dumps({"type": "ping", "data": {"timestamp": "x" * 70_000}}).decode())
    code, got = await client.closed()
    assert code == 1009
    assert got[-1]["type"] == "error" and got[-1]["data"]["code"] == "INVALID_MESSAGE"
    assert got[-1]["data"]["details"]["max_message_bytes"] == 65536
    await still_streaming(bystander)


async def test_huge_frame_is_cut_by_the_websocket_layer(make_server, ws_client):
    """Beyond ws_max_size (4 x max_message_bytes) the frame is refused unread: close 1009
    without an error message. A short send_timeout keeps the server's wait for the peer's
    TCP close (it never reads the rest of the frame) short in this test."""
    server = await make_server(send_timeout=0.3)
    client = await ws_client(server)
    await client.send("x" * (5 * 65536))
    code, got = await client.closed()
    assert code == 1009 and got == []
    connections = server.context.connections
    await connections.wait_for(lambda: connections.limiter.total == 0, WAIT)


async def test_eleventh_connection_refused(limited, bystander, ws_client):
    clients = [await ws_client(limited) for _ in range(9)]  # + bystander = 10
    refused = await ws_client(limited, greet=False)
    code, got = await refused.closed()
    assert code == 1008
    assert got[0]["type"] == "error" and got[0]["data"]["code"] == "RATE_LIMIT_EXCEEDED"
    status, body = await get_json(limited, f"/v2/stream/{AAPL}/last")
    assert status == 429 and body["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    status, health = await get_json(limited, "/health")  # status endpoints are not counted
    assert status == 200
    await still_streaming(bystander)
    await clients[0].close()  # a freed slot can be used again, by SSE too
    await wait_connections(limited, 9)
    async with sse(limited, f"/v2/stream/{AAPL}/last?limit=1") as source:
        assert [e[0] async for e in sse_events(source)] == ["subscribed", "tick", "complete"]
    await still_streaming(bystander)


async def test_twenty_first_stream_refused(limited, bystander, ws_client):
    client = await ws_client(limited)
    ids = [AAPL, EURUSD, ES, MNQ]
    for con_id in ids:
        await client.subscribe(con_id, ["last", "all_last", "bid_ask", "mid_point"])
    await client.subscribe(AAPL, ["bid_ask", "last", "mid_point", "all_last"])  # 20 open now
    reply = await client.request("subscribe", {"contract_id": EURUSD, "tick_types": ["bid_ask"]})
    assert reply["type"] == "error" and reply["data"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert reply["data"]["details"]["max_streams"] == 20
    assert (await client.request("ping"))["type"] == "pong"
    await client.ticks(5)
    await still_streaming(bystander)


async def wait_connections(server, n: int) -> None:
    connections = server.context.connections
    await connections.wait_for(lambda: connections.limiter.total == n, WAIT)


async def raw_ws_subscribe(
    port: int, subscribe: list[dict], path: str = "/v2/ws/stream"
) -> socket.socket:
    """A WebSocket client that does the handshake, subscribes and then never reads again.

    A tiny receive buffer makes the server's socket back up within a fraction of a second.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    await loop.sock_sendall(
        sock,
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode(),
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += await asyncio.wait_for(loop.sock_recv(sock, 1), WAIT)
    assert head.startswith(b"HTTP/1.1 101"), head
    for msg in subscribe:
        await loop.sock_sendall(sock, masked_text_frame(orjson.dumps(msg)))
    return sock


def masked_text_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    size = len(payload)
    head = bytes([0x81]) + (
        bytes([0x80 | size]) if size < 126 else bytes([0x80 | 126]) + size.to_bytes(2, "big")
    )
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


ALL_TYPES = ["bid_ask", "last", "all_last", "mid_point"]
QUEUE = 500


async def test_slow_consumer_is_cut_off(make_server, ws_client, gateway):
    """A client that stops reading is closed; a twin that reads the same 16 streams is not."""
    server = await make_server(queue_size=QUEUE, send_timeout=1.0, socket_send_buffer=65536)
    bystander = await ws_client(server)
    await bystander.subscribe(EURUSD, ["bid_ask"])
    twin = await ws_client(server)
    for con_id in (AAPL, EURUSD, ES, MNQ):
        await twin.subscribe(con_id, ALL_TYPES)
    twin_got: list[int] = []

    async def read_twin() -> None:
        while True:
            twin_got.append(len(await twin.conn.recv()))

    twin_reader = asyncio.create_task(read_twin())
    process = psutil.Process()
    rss_before = process.memory_info().rss
    gateway.set_rate(150)
    subs = [
        {"type": "subscribe", "id": i, "data": {"contract_id": c, "tick_types": ALL_TYPES}}
        for i, c in enumerate((AAPL, EURUSD, ES, MNQ))
    ]
    slow = await raw_ws_subscribe(server.port, subs)
    try:
        max_depth = 0
        async with asyncio.timeout(30):
            while True:  # the bystander streams on while the slow one backs up and is cut off
                await bystander.ticks(20)
                _, stats = await get_json(server, "/ws/stats")
                max_depth = max(max_depth, stats["max_queue_depth"])
                if stats["slow_consumers_closed"] >= 1:
                    break
        assert max_depth <= QUEUE + 1
        assert stats["connections"] == 2  # bystander and twin
        assert all(s["queued"] < QUEUE for s in stats["subscribers"])
        growth = process.memory_info().rss - rss_before
        assert growth < 100 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB"
        await still_streaming(bystander)
        received = len(twin_got)
        assert not twin_reader.done()
        async with asyncio.timeout(20):  # the twin still streams too (its reader may lag)
            while len(twin_got) <= received:
                await bystander.ticks(5)
        assert not twin_reader.done()
    finally:
        twin_reader.cancel()
        slow.close()
        gateway.set_rate(200)


async def slot_released(server) -> None:
    """Wait until the server has cut a slow consumer off (no sleeps: connection events)."""
    connections = server.context.connections
    await connections.wait_for(lambda: connections.slow_consumers >= 1, WAIT)


async def test_never_reading_client_frees_its_slot_at_once(make_server, ws_client, gateway):
    """A client that never reads after the handshake is cut off after send_timeout (the
    send path, not the queue: the queue is far from full); with one connection per IP a
    new connection fits at once and /ws/stats no longer lists the dead one."""
    server = await make_server(
        max_connections_per_ip=1, queue_size=100_000, send_timeout=0.5, socket_send_buffer=8192
    )
    gateway.set_rate(400)
    subs = [{"type": "subscribe", "id": 1, "data": {"contract_id": AAPL, "tick_types": ALL_TYPES}}]
    dead = await raw_ws_subscribe(server.port, subs)
    try:
        await slot_released(server)
        _, stats = await get_json(server, "/ws/stats")
        assert stats["connections"] == 0 and stats["subscribers"] == []
        assert stats["slow_consumers_closed"] == 1
        fresh = await ws_client(server)  # the per-IP slot is free again
        await fresh.subscribe(AAPL, ["bid_ask"])
        assert len(await fresh.ticks(3)) == 3
        _, stats = await get_json(server, "/ws/stats")
        assert [s["ip"] for s in stats["subscribers"]] == ["127.0.0.1"]
    finally:
        dead.close()
        gateway.set_rate(200)


async def raw_sse_request(port: int, path: str) -> socket.socket:
    """An SSE client that sends its request and then never reads (tiny receive buffer)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n"
    await loop.sock_sendall(sock, request.encode())
    return sock


async def test_never_reading_sse_client_frees_its_slot_when_its_queue_overflows(
    make_server, gateway
):
    """An SSE client that stops reading is dropped the moment its queue overflows, not
    `send_timeout` later: its per-IP slot is free again at once and /ws/stats forgets it."""
    server = await make_server(
        max_connections_per_ip=1, queue_size=300, send_timeout=60.0, socket_send_buffer=8192
    )
    gateway.set_rate(400)
    dead = await raw_sse_request(server.port, f"/v2/stream/{AAPL}?tick_types=bid_ask,last,all_last")
    try:
        await slot_released(server)
        _, stats = await get_json(server, "/ws/stats")
        assert stats["connections"] == 0 and stats["subscribers"] == []
        async with sse(server, f"/v2/stream/{AAPL}/bid_ask?limit=3") as source:
            assert source.response.status_code == 200  # the per-IP slot is free again
            events = [event async for event, _, _ in sse_events(source)]
        assert events == ["subscribed", "tick", "tick", "tick", "complete"]
    finally:
        dead.close()
        gateway.set_rate(200)


def control_url(server) -> str:
    return server.url.replace("http", "ws") + "/ws/control"


async def test_control_connections_count_against_the_per_ip_limit(make_server, ws_client):
    """/ws/control takes a per-IP slot like a stream connection: past the limit it is
    refused as they are (RATE_LIMIT_EXCEEDED, close 1008), and it holds a slot a stream
    connection then cannot have; /health and /ws/stats stay open."""
    server = await make_server(max_connections_per_ip=2)
    async with websockets.connect(control_url(server), open_timeout=WAIT) as control:
        await control.send('{"type":"ping","id":1}')  # answered: the slot is taken by now
        assert orjson.loads(await asyncio.wait_for(control.recv(), WAIT))["type"] == "pong"
        stream = await ws_client(server)
        _, stats = await get_json(server, "/ws/stats")
        assert stats["per_ip"] == {"127.0.0.1": 2} and stats["control_connections"] == 1
        for url in (control_url(server), server.ws_url):
            async with websockets.connect(url, open_timeout=WAIT) as refused:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    while True:
                        msg = orjson.loads(await asyncio.wait_for(refused.recv(), WAIT))
                        assert msg["type"] == "error", msg
                        assert msg["data"]["code"] == "RATE_LIMIT_EXCEEDED"
                        assert msg["data"]["details"]["max_connections_per_ip"] == 2
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008, url
        await stream.close()
        await wait_connections(server, 1)  # the control connection alone
    await wait_connections(server, 0)
    async with websockets.connect(control_url(server), open_timeout=WAIT) as again:
        await again.send('{"type":"stats","id":2}')
        assert orjson.loads(await asyncio.wait_for(again.recv(), WAIT))["type"] == "stats"


async def test_a_control_client_that_never_reads_is_cut_after_the_send_timeout(make_server):
    """Stats requests from a client that reads none of the replies: once a reply has been
    stuck for send_timeout the server drops the connection and frees its slot (before,
    the session waited on that send forever)."""
    server = await make_server(max_connections_per_ip=1, send_timeout=0.5, socket_send_buffer=8192)
    connections = server.context.connections
    requests = [{"type": "stats", "id": i} for i in range(3_000)]
    dead = await raw_ws_subscribe(server.port, requests, path="/ws/control")
    try:
        await connections.wait_for(lambda: connections.control == 1, WAIT)
        await connections.wait_for(lambda: connections.control == 0, WAIT)
        assert connections.limiter.total == 0
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionResetError):  # reset: it left requests unread
            async with asyncio.timeout(WAIT):  # what was buffered, then the server's FIN
                while await loop.sock_recv(dead, 65536):
                    pass
    finally:
        dead.close()
    async with websockets.connect(control_url(server), open_timeout=WAIT) as fresh:
        await fresh.send('{"type":"ping","id":"fresh"}')
        assert orjson.loads(await asyncio.wait_for(fresh.recv(), WAIT))["id"] == "fresh"


async def slow_reader(server) -> websockets.ClientConnection:
    """A real client whose buffers are tiny: while the test does not call recv(), it
    stops reading from its socket and the server's sends back up."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    return await websockets.connect(
        server.ws_url, sock=sock, max_queue=4, max_size=2**20, open_timeout=WAIT
    )


@pytest.mark.parametrize(
    "cut_by, options",
    [
        ("queue", {"queue_size": 300, "send_timeout": 10.0}),
        ("send_timeout", {"queue_size": 100_000, "send_timeout": 1.0}),
    ],
)
async def test_slow_reader_is_told_slow_consumer_with_last_sent(
    make_server, ws_client, gateway, cut_by, options, caplog
):
    """A client that pauses reading is cut off (by its queue overflowing, or by a send that
    blocked for send_timeout); its slot goes at once, and when it reads again it gets every
    frame that reached the socket, then SLOW_CONSUMER whose last_sent is exactly the last
    sequence it received per stream, then close 1008."""
    server = await make_server(max_connections_per_ip=1, socket_send_buffer=8192, **options)
    conn = await slow_reader(server)
    try:
        await conn.send(
            orjson.dumps(
                {
                    "type": "subscribe",
                    "id": "s",
                    "data": {"contract_id": AAPL, "tick_types": ["bid_ask", "last"]},
                }
            ).decode()
        )
        gateway.set_rate(400)
        await slot_released(server)
        # Read again at once: the server tries to tell it for send_timeout only, then resets.
        caplog.set_level(logging.INFO, logger="ibstream.server.ws_writer")
        last: dict[str, int] = {}
        got: list[dict] = []

        async def read_until_closed() -> websockets.ConnectionClosed:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                async with asyncio.timeout(WAIT):
                    while True:
                        got.append(msg := orjson.loads(await conn.recv()))
                        if msg["type"] == "tick":
                            last[msg["stream_id"]] = msg["data"]["sequence"]
            return closed.value

        reading = asyncio.create_task(read_until_closed())
        fresh = await ws_client(server)  # fits at once under the per-IP limit of 1
        assert fresh.greeting["type"] == "connected"
        closed = await reading
        if closed.rcvd is None:  # this test's loop (server and client) was too slow to read
            # within the 1 s send_timeout: the server says so and resets, never leaves it hanging
            assert cut_by == "send_timeout", "with a send_timeout of 10 s it must be told"
            assert any("connection reset" in r.getMessage() for r in caplog.records)
            assert not [m for m in got if m["type"] == "error"]
            return
        assert closed.rcvd.code == 1008
        error = got[-1]
        assert error["type"] == "error" and error["data"]["code"] == "SLOW_CONSUMER"
        assert [m["type"] for m in got[:2]] == ["connected", "subscribed"]
        details = error["data"]["details"]
        assert last and {s["stream_id"]: s["last_sent"] for s in details["streams"]} == last
        types = {s["stream_id"]: s["tick_type"] for s in got[1]["data"]["streams"]}
        assert details["last_sent"] == {types[sid]: seq for sid, seq in last.items()}
    finally:
        await conn.close()
        gateway.set_rate(200)


async def test_a_slow_consumer_that_cannot_be_told_is_reset_at_once(make_server, gateway, caplog):
    """When the bounded attempt to tell a cut-off client fails, the server resets the
    connection (RST) there and then. Left to close, its socket would wait for a reader that
    may never come, and the kernel's TCP_USER_TIMEOUT would later drop it without a word to
    the peer, which would then wait forever for data if it read again."""
    caplog.set_level(logging.INFO, logger="ibstream.server.ws_writer")
    server = await make_server(
        max_connections_per_ip=1, socket_send_buffer=8192, queue_size=100_000, send_timeout=0.5
    )
    given_up = asyncio.Event()
    loop = asyncio.get_running_loop()

    class GivenUp(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "not sent" in record.getMessage():
                loop.call_soon_threadsafe(given_up.set)

    watcher = GivenUp()
    logging.getLogger("ibstream.server.ws_writer").addHandler(watcher)
    conn = await slow_reader(server)
    try:
        request = {
            "type": "subscribe",
            "id": "s",
            "data": {"contract_id": AAPL, "tick_types": ["bid_ask", "last"]},
        }
        await conn.send(orjson.dumps(request).decode())
        gateway.set_rate(400)
        await asyncio.wait_for(given_up.wait(), WAIT)  # cut, and the error could not be sent
        client_port = conn.local_address[1]
        server_side = [
            c
            for c in psutil.net_connections(kind="tcp")  # the whole machine: orphans too
            if c.laddr and c.laddr.port == server.port and c.raddr and c.raddr.port == client_port
        ]
        # no socket left waiting for the reader, not even one the process let go of with data
        # unsent (the kernel would drop that one silently later)
        assert server_side == [], server_side
        with pytest.raises(websockets.ConnectionClosedError) as closed:
            async with asyncio.timeout(WAIT):
                while True:
                    await conn.recv()  # what reached its socket, then the reset: no hang
        assert closed.value.rcvd is None
    finally:
        logging.getLogger("ibstream.server.ws_writer").removeHandler(watcher)
        await conn.close()
        gateway.set_rate(200)
