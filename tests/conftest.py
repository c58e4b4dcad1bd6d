"""Shared fixtures: a gateway simulator, a server on a free port, WebSocket and SSE clients.

Everything talks over real sockets on 127.0.0.1. Waiting is always on a message or an event
with a deadline, never on a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import orjson
import pytest
import websockets
from httpx_sse import EventSource, aconnect_sse

from ibstream.gateway import SESSION_DATE, GatewaySimulator
from ibstream.gateway.contracts import SESSION_DATE_ENV
from ibstream.protocol.arrow import decode_frame, is_arrow_frame
from ibstream.server.run import ServerHandle, start_server
from ibstream.server.settings import ServerSettings
from tests.client_fixtures import ServerProcess
from tests.schema_check import SENT

AAPL, EURUSD = 265598, 12087792
# Every simulator the tests start, in this process or a child, lives on one pinned day, so the
# front month the tests expect (ESZ6, 637533641) never rolls with the calendar.
os.environ[SESSION_DATE_ENV] = SESSION_DATE.isoformat()
WAIT = 10.0  # seconds any single expected message may take


@pytest.fixture(autouse=True)
def _private_state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Pid, lock and log files of background servers go to a temp dir, never the user's."""
    monkeypatch.setenv("IBSTREAM_STATE_DIR", str(tmp_path_factory.mktemp("state")))


@pytest.fixture(autouse=True)
def _sent_messages_match_the_schema():
    """Fail the test whose servers sent a message the published schema rejects."""
    SENT.take()
    yield
    failures = SENT.take()
    if failures:
        shown = "\n".join(f"{reason}: {payload[:300]!r}" for payload, reason in failures[:5])
        pytest.fail(f"{len(failures)} sent message(s) do not match /v2/schema:\n{shown}")


@contextlib.asynccontextmanager
async def running_gateway(seed: int = 1) -> AsyncIterator[GatewaySimulator]:
    """A started simulator at 200 events/s a contract, stopped at the end."""
    gw = GatewaySimulator(port=0, seed=seed, rate=200.0, bursts=False)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


@pytest.fixture
async def gateway() -> AsyncIterator[GatewaySimulator]:
    async with running_gateway() as gw:
        yield gw


class Changes:
    """Lets a test await a condition on state that callbacks update (no polling sleeps)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

    async def until(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._event.clear()
                await self._event.wait()


ServerFactory = Callable[..., Awaitable[ServerHandle]]


def checked(observer: Callable[[bytes], None] | None) -> Callable[[bytes], None]:
    """A sent_observer that also feeds the suite's schema check (SENT)."""
    if observer is None or observer is SENT:
        return SENT
    return lambda payload: (SENT(payload), observer(payload))  # type: ignore[func-returns-value]


@pytest.fixture
async def server_process(gateway: GatewaySimulator) -> AsyncIterator[ServerProcess]:
    """`ibstream serve` as a child process on the gateway, to kill and start again."""
    process = ServerProcess(gateway.port)
    try:
        yield process
    finally:
        await process.kill()


@pytest.fixture
async def make_server(gateway: GatewaySimulator) -> AsyncIterator[ServerFactory]:
    """Start servers with settings overrides; all are stopped after the test. A test's own
    `sent_observer` is chained after the schema check, never instead of it. (Servers run
    as subprocesses, e.g. `ServerProcess`, are outside the check: their messages cannot
    reach SENT.)"""
    handles: list[ServerHandle] = []

    async def make(**overrides: object) -> ServerHandle:
        options: dict = {
            "port": 0,
            "ib_port": gateway.port,
            "client_id": random.randint(1000, 1_000_000),
            "max_connections_per_ip": 100,
        }
        options.update(overrides)
        options["sent_observer"] = checked(options.get("sent_observer"))  # type: ignore[arg-type]
        handle = await start_server(ServerSettings(**options))
        handles.append(handle)
        return handle

    try:
        yield make
    finally:
        for handle in reversed(handles):
            await handle.stop()


@pytest.fixture
async def server(make_server: ServerFactory) -> ServerHandle:
    return await make_server()


class WSClient:
    """A `websockets` client that keeps every message it reads, in order."""

    def __init__(self, conn: websockets.ClientConnection):
        self.conn = conn
        self.seen: list[dict] = []
        self.greeting: dict = {}
        self._ids = 0

    async def recv(self, timeout: float = WAIT) -> dict:
        # asyncio.timeout, not wait_for: cancelling a task parked in wait_for(conn.recv())
        # could hang at teardown on Python 3.11; a timeout scope cancels at once.
        async with asyncio.timeout(timeout):
            raw = await self.conn.recv()
        if isinstance(raw, bytes) and is_arrow_frame(raw):  # format "arrow": its rows as items
            msg = {"type": "arrow", "data": {"ticks": decode_frame(raw).to_pylist()}}
        else:
            msg = orjson.loads(raw)
        self.seen.append(msg)
        return msg

    async def send(self, obj: dict | str | bytes) -> None:
        await self.conn.send(obj if isinstance(obj, str | bytes) else orjson.dumps(obj).decode())

    async def expect(self, type_: str, timeout: float = WAIT, **match: object) -> dict:
        """Read until a message of `type_` whose data contains `match` arrives."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.recv(timeout)
                data = msg.get("data", {})
                if msg["type"] == type_ and all(data.get(k) == v for k, v in match.items()):
                    return msg

    async def request(self, type_: str, data: dict | None = None) -> dict:
        """Send a request and return its reply (matched by request_id)."""
        self._ids += 1
        rid = f"r{self._ids}"
        body: dict = {"type": type_, "id": rid}
        if data is not None:
            body["data"] = data
        await self.send(body)
        async with asyncio.timeout(WAIT):
            while True:
                msg = await self.recv()
                if msg.get("data", {}).get("request_id") == rid:
                    return msg

    async def subscribe(self, contract: int | str, tick_types: list[str], **config: object) -> dict:
        data: dict = {"contract_id": contract, "tick_types": tick_types}
        if config:
            data["config"] = config
        reply = await self.request("subscribe", data)
        assert reply["type"] == "subscribed", reply
        return reply["data"]

    async def ticks(
        self, n: int, stream_id: str | None = None, timeout: float = WAIT
    ) -> list[dict]:
        """The next n ticks (of one stream if given) read from now on."""
        out: list[dict] = []
        async with asyncio.timeout(timeout):
            while len(out) < n:
                msg = await self.recv(timeout)
                if msg["type"] == "tick" and stream_id in (None, msg["stream_id"]):
                    out.append(msg)
        return out

    async def closed(self, timeout: float = WAIT) -> tuple[int | None, list[dict]]:
        """Read until the server closes; the close code and what arrived before it."""
        got: list[dict] = []
        async with asyncio.timeout(timeout):
            try:
                while True:
                    got.append(orjson.loads(await self.conn.recv()))
            except websockets.ConnectionClosed as exc:
                return (exc.rcvd.code if exc.rcvd else None), got

    async def close(self) -> None:
        await self.conn.close()


@pytest.fixture
async def ws_client() -> AsyncIterator[Callable[..., Awaitable[WSClient]]]:
    """Open WebSocket clients (`await ws_client(server)`); closed after the test."""
    clients: list[WSClient] = []

    async def connect(server: ServerHandle, *, greet: bool = True, **kwargs: object) -> WSClient:
        kwargs.setdefault("max_queue", 4096)
        kwargs.setdefault("max_size", 2**24)
        conn = await websockets.connect(server.ws_url, open_timeout=WAIT, **kwargs)
        client = WSClient(conn)
        clients.append(client)
        if greet:
            client.greeting = await client.recv()
            assert client.greeting["type"] == "connected", client.greeting
        return client

    try:
        yield connect
    finally:
        await asyncio.gather(*(c.conn.close() for c in clients), return_exceptions=True)


@asynccontextmanager
async def sse(
    server: ServerHandle, path: str, headers: dict | None = None
) -> AsyncIterator[EventSource]:
    """An SSE response from the server (check `.response.status_code` first)."""
    async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as client:
        async with aconnect_sse(client, "GET", path, headers=dict(headers or {})) as source:
            yield source


async def sse_events(
    source: EventSource, timeout: float = WAIT
) -> AsyncIterator[tuple[str, dict, str]]:
    """(event, data, id) of each SSE event, with a deadline for each one."""
    events = source.aiter_sse().__aiter__()
    while True:
        try:
            async with asyncio.timeout(timeout):  # not wait_for: see WSClient.recv
                ev = await anext(events)
        except StopAsyncIteration:
            return
        yield ev.event, orjson.loads(ev.data), ev.id


async def get_json(server: ServerHandle, path: str) -> tuple[int, object]:
    async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as client:
        response = await client.get(path)
        return response.status_code, response.json()


def upstream(gateway: GatewaySimulator, con_id: int, ib_tick_type: str) -> list[tuple]:
    return [s for s in gateway.subscriptions if s[2] == con_id and s[3] == ib_tick_type]


def assert_contiguous(seqs: list[int]) -> None:
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
