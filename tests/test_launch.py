"""`ensure_server`: find the running server or start one in the background, and stop only
what it started. Every process these tests start is stopped by the `launched` finalizer; pid
files and logs go to a temporary $IBSTREAM_STATE_DIR."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from ibstream.client import AsyncClient, Client
from ibstream.server import daemon
from ibstream.server.launch import (
    ServerInfo,
    ServerNotRunning,
    ServerStartError,
    ensure_server,
    health,
)
from tests.client_fixtures import free_port

ES = 637533641
SCRIPT = Path(__file__).resolve().parents[1] / "server" / "run_server.py"


@pytest.fixture(autouse=True)
def state(tmp_path, monkeypatch) -> Path:
    """A private state dir, and no IBSTREAM_* setting from the caller's environment."""
    for name in [name for name in os.environ if name.startswith("IBSTREAM_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("IBSTREAM_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


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


async def test_uses_ib_when_a_gateway_answers(gateway, launched, tmp_path, monkeypatch):
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("IBSTREAM_IB_PORT", str(gateway.port))  # as run_server.py reads it
    info = await asyncio.to_thread(ensure_server, url, start=True, log_file=tmp_path / "ib.log")
    launched.append(info)
    assert info.started and info.mode == "ib"
    async with httpx.AsyncClient() as http:
        body = (await http.get(f"{url}/health")).json()
    assert body["status"] == "ok" and body["ib"]["connected"]
    async with AsyncClient(url) as client:
        ticks = await client.collect("ES", limit=20, progress=False)
    assert len(ticks) == 20
    assert any(s[2] == ES for s in gateway.subscriptions)  # the server read our gateway


def test_run_server_sees_and_stops_a_server_ensure_server_started(launched):
    port = free_port()
    info = ensure_server(f"http://127.0.0.1:{port}", demo=True)
    launched.append(info)
    assert info.log_file == daemon.default_log(port)

    def run_server(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, str(SCRIPT), *args, "--port", str(port)]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    status = run_server("status")
    assert status.returncode == 0 and f"pid: {info.pid}," in status.stdout
    assert "connected to the gateway simulator" in status.stdout
    assert f"serving on {info.url}" in run_server("logs").stdout
    assert run_server("stop").returncode == 0
    assert servers_on(port) == [] and health(info.url) is None
    assert not info.stop()  # already stopped: nothing left to do


def test_a_server_that_exits_at_startup_is_a_clear_error(launched, tmp_path, monkeypatch):
    broken = tmp_path / "broken"  # every Python started with this path exits at once
    broken.mkdir()
    (broken / "sitecustomize.py").write_text(
        "import os, sys\nsys.stderr.write('refusing to start\\n')\nsys.stderr.flush()\nos._exit(3)\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(broken))
    port = free_port()
    with pytest.raises(ServerStartError) as failure:
        launched.append(ensure_server(f"http://127.0.0.1:{port}", demo=True))
    message = str(failure.value)
    assert "exited with code 3" in message and message.endswith("refusing to start")
    assert servers_on(port) == [] and not daemon.pid_path(port).exists()


def test_a_busy_port_is_a_clear_error(launched):
    with socket.socket() as taken:  # bound, not listening: /health fails, so would binding
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(ServerStartError) as failure:
            launched.append(ensure_server(f"http://127.0.0.1:{port}", demo=True))
    assert f"port {port} on 127.0.0.1 is in use by another program" in str(failure.value)
    assert servers_on(port) == [] and not daemon.pid_path(port).exists()


def test_only_a_local_http_url_is_started(launched):
    with pytest.raises(ServerStartError, match="only a plain http URL on this machine"):
        launched.append(ensure_server(f"https://127.0.0.1:{free_port()}", demo=True))


def test_an_explicit_url_where_nothing_answers_is_an_error_not_a_start(
    launched, state, monkeypatch
):
    port = free_port()  # a typo'd port: nothing answers there
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(ServerNotRunning) as failure:
        launched.append(ensure_server(url))
    message = str(failure.value)
    assert f"no ibstream server answers at {url}" in message
    assert f"ibstream serve --port {port}" in message and "start=True" in message
    assert servers_on(port) == [] and not daemon.pid_path(port).exists()
    assert not list(state.glob("server-*"))  # nothing was started in the background
    default = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("IBSTREAM_URL", default)
    with pytest.raises(ServerNotRunning, match=f"answers at {default}"):
        ensure_server(start=False)  # the default URL too, when told never to start
