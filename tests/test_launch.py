"""`ensure_server`: find the running server or start one in the background, and stop only
what it started. Every process these tests start is stopped by the `launched` finalizer."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import httpx
import psutil
import pytest

from ibstream.client import AsyncClient, Client
from ibstream.launch import ServerInfo, ServerStartError, ensure_server, health
from tests.client_fixtures import free_port

ES = 637533641


@pytest.fixture
def launched() -> Iterator[list[ServerInfo]]:
    """Servers a test started; each is stopped afterwards, whatever happened."""
    servers: list[ServerInfo] = []
    yield servers
    for info in servers:
        info.stop()


def servers_on(port: int) -> list[psutil.Process]:
    """Processes running `serve ... --port <port>`."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "serve" in cmd and "--port" in cmd and cmd[cmd.index("--port") + 1] == str(port):
            found.append(proc)
    return found


def test_starts_a_simulator_server_then_finds_it_then_stops_it(launched, tmp_path, monkeypatch):
    port = free_port()
    monkeypatch.setenv("IBSTREAM_URL", f"http://127.0.0.1:{port}")
    log_file = tmp_path / "server.log"
    first = ensure_server(ib_port=free_port(), log_file=log_file)  # no IB there: simulator
    launched.append(first)
    assert (first.url, first.started, first.mode) == (f"http://127.0.0.1:{port}", True, "simulator")
    assert first.log_file == log_file and psutil.pid_exists(first.pid)
    assert "started" in repr(first) and str(first.pid) in first.describe()
    assert "\n" not in first.describe()

    with Client(first.url) as client:
        ticks = client.collect("ES", limit=50, progress=False)
    assert len(ticks) == 50 and set(ticks["contract_id"]) == {ES}

    second = ensure_server(first.url)
    launched.append(second)
    assert (second.started, second.pid, second.mode) == (False, None, "existing")
    assert [p.pid for p in servers_on(port)] == [first.pid]  # no second server
    assert not second.stop() and health(first.url) is not None  # it leaves a found one alone

    assert first.stop()
    assert not psutil.pid_exists(first.pid) and health(first.url) is None
    assert "serving on" in log_file.read_text()
    assert not first.stop()  # once is enough


async def test_uses_ib_when_a_gateway_answers(gateway, launched, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    info = await asyncio.to_thread(
        ensure_server, url, ib_port=gateway.port, log_file=tmp_path / "ib.log"
    )
    launched.append(info)
    assert info.started and info.mode == "ib"
    async with httpx.AsyncClient() as http:
        body = (await http.get(f"{url}/health")).json()
    assert body["status"] == "ok" and body["ib"]["connected"]
    async with AsyncClient(url) as client:
        ticks = await client.collect("ES", limit=20, progress=False)
    assert len(ticks) == 20
    assert any(s[2] == ES for s in gateway.subscriptions)  # the server read our gateway


def test_a_server_that_cannot_start_is_a_clear_error(launched, tmp_path):
    with socket.socket() as taken:  # bound, not listening: /health fails, so does binding
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(ServerStartError) as failure:
            launched.append(
                ensure_server(f"http://127.0.0.1:{port}", demo=True, log_file=tmp_path / "x.log")
            )
    message = str(failure.value)
    assert "exited with code" in message and "ends with:" in message
    assert "address already in use" in message.lower()
    assert servers_on(port) == []


def test_only_a_local_http_url_is_started(launched):
    with pytest.raises(ServerStartError, match="only a plain http URL on this machine"):
        launched.append(ensure_server(f"https://127.0.0.1:{free_port()}", demo=True))
