"""`ibstream record`'s `/health`: a real nats-server, the recorder as its own process, its
`/health` read over HTTP (its URL from the one line it logs at start). Degraded (503) while
NATS is unreachable at start-up, while NATS is kill -9ed (one warning line), and while the
store cannot be written; ok (200) once each is back, and recording goes on; bad
`--health-port` values are one line."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ibstream.bus.nats_server import NatsServer, free_port
from ibstream.model import TickType
from tests.bus_fixtures import nats_server  # noqa: F401 (the fixture)
from tests.bus_record_fixtures import WAIT, Publisher, RecorderProcess, stored
from tests.store_data import ES, sample_ticks

RUN = "a1b2c3d4e5f60718"
TYPES = ("bid_ask", "last")


@pytest.fixture
def bus(nats_server: NatsServer) -> NatsServer:  # noqa: F811 (the fixture, by name)
    return nats_server


@pytest.fixture
def recorder(bus: NatsServer, tmp_path: Path):
    process = RecorderProcess(bus.url, tmp_path / "store", tmp_path / "recorder.log")
    try:
        yield process
    finally:
        process.kill()


async def health(url: str) -> tuple[int, dict]:
    async with httpx.AsyncClient(timeout=WAIT) as http:
        answer = await http.get(url)
    return answer.status_code, answer.json()


async def until(url: str, status: str) -> tuple[int, dict]:
    """`/health` once it says `status` (another process's state: polled with a deadline)."""
    async with asyncio.timeout(WAIT):
        while True:
            code, body = await health(url)
            if body["status"] == status:
                return code, body
            await asyncio.sleep(0.05)


def sequences(store: Path, kind: TickType) -> list[int]:
    return sorted(r["sequence"] for r in stored(store) if r["tick_type"] == kind.value)


def warnings(log: str) -> list[str]:
    return [line.split(": ", 1)[1] for line in log.splitlines() if " WARNING " in line]


async def test_degraded_while_nats_is_unreachable_at_start_then_ok(tmp_path: Path):
    """Nobody listens on the bus's port: 503, the bus not connected and why; NATS started
    on that port: 200, and what is published is recorded."""
    bus = NatsServer(tmp_path / "nats", port=free_port())
    recorder = RecorderProcess(bus.url, tmp_path / "store", tmp_path / "recorder.log")
    ticks = sample_ticks(ES, 200)
    seqs: dict[TickType, int] = {}
    try:
        recorder.start()
        url = await recorder.health_url()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/health")
        await recorder.wait_log("cannot reach the bus")
        code, body = await health(url)
        assert (code, body["status"], body["role"]) == (503, "degraded", "recorder")
        assert body["bus"]["connected"] is False and body["bus"]["consuming"] is False
        assert body["bus"]["url"] == bus.url and body["bus"]["outages"] == 1
        assert "ConnectionRefusedError" in body["bus"]["last_error"]
        assert body["store"]["ok"] is True and body["recorder"]["ticks_recorded"] == 0
        async with httpx.AsyncClient(timeout=WAIT) as http:
            head = await http.head(url)
        assert head.status_code == 503 and head.content == b""
        bus.start()
        code, body = await until(url, "ok")
        assert code == 200 and body["bus"]["connected"] is True
        assert "last_error" not in body["bus"] and "down_seconds" not in body["bus"]
        async with Publisher(bus.url) as source:
            await source.create()
            await source.begin(RUN, ES, TYPES)
            await source.ticks(RUN, ticks, seqs)
            await source.wait_acked()
        code, body = await health(url)
        assert code == 200 and body["bus"]["consuming"] is True
        assert body["recorder"]["ticks_recorded"] == len(ticks)
        assert body["recorder"]["runs"] == [RUN]
        assert await recorder.terminate() == 0
    finally:
        recorder.kill()
        bus.kill()
    log = recorder.text()
    assert log.count("recorder health at ") == 1 and log.count("cannot reach the bus") == 1
    for kind, top in seqs.items():
        assert sequences(recorder.store, kind) == list(range(1, top + 1))


async def test_degraded_while_nats_is_killed_and_ok_again(bus: NatsServer, recorder):
    """NATS kill -9ed while recording: 503 and one warning line; NATS started again on its
    store: 200, and a tick published after is in the store (nothing lost, nothing twice)."""
    ticks = sample_ticks(ES, 300)
    seqs: dict[TickType, int] = {}
    recorder.start()
    url = await recorder.health_url()
    async with Publisher(bus.url) as source:
        await source.create()
        await source.begin(RUN, ES, TYPES)
        await source.ticks(RUN, ticks[:200], seqs)
        await source.wait_acked()
    code, body = await until(url, "ok")
    assert body["bus"]["outages"] == 0 and body["recorder"]["ticks_recorded"] == 200
    before = len(warnings(recorder.text()))
    bus.kill()
    code, body = await until(url, "degraded")
    assert code == 503 and body["bus"]["connected"] is False and body["bus"]["outages"] == 1
    assert body["bus"]["last_error"] and body["store"]["ok"] is True
    await recorder.wait_log("lost the bus")
    bus.start()
    code, body = await until(url, "ok")
    assert code == 200 and body["bus"]["connected"] is True and body["bus"]["outages"] == 1
    async with Publisher(bus.url) as source:
        await source.ticks(RUN, ticks[200:], seqs)
        await source.wait_acked()
    assert (await health(url))[1]["recorder"]["ticks_recorded"] == len(ticks)
    assert await recorder.terminate() == 0
    for kind, top in seqs.items():
        assert sequences(recorder.store, kind) == list(range(1, top + 1))
    outage = warnings(recorder.text())[before:]
    assert len([w for w in outage if "lost the bus" in w]) == 1
    assert [w.split(" at ")[0] for w in outage] == ["lost the bus", "reconnected to the bus"]


async def test_degraded_while_the_store_cannot_be_written(bus: NatsServer, recorder):
    """The store's directory gone: 503 with the store's problem; back: 200, all written."""
    ticks = sample_ticks(ES, 400)
    seqs: dict[TickType, int] = {}
    recorder.start()
    url = await recorder.health_url()
    async with Publisher(bus.url) as source:
        await source.create()
        await source.begin(RUN, ES, TYPES)
        await source.ticks(RUN, ticks[:200], seqs)
        await source.wait_acked()
        aside = recorder.store.with_name("store-aside")
        recorder.store.rename(aside)
        await source.ticks(RUN, ticks[200:], seqs)
        code, body = await until(url, "degraded")
        assert code == 503 and body["bus"]["connected"] is True
        assert body["store"]["ok"] is False
        assert "cannot write to the tick store" in body["store"]["problem"]
        aside.rename(recorder.store)
        code, body = await until(url, "ok")
        assert code == 200 and "problem" not in body["store"]
        await source.wait_acked()
    assert await recorder.terminate() == 0
    for kind, top in seqs.items():
        assert sequences(recorder.store, kind) == list(range(1, top + 1))


def test_bad_health_options_are_one_line(tmp_path: Path):
    """A bad `--health-port` is argparse's one line (exit 2), a busy one (or a host that
    does not resolve) one line too (exit 1)."""
    base = [sys.executable, "-m", "ibstream", "record", "--from-bus", "nats://127.0.0.1:1"]
    base += ["--to", str(tmp_path / "store")]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = str(busy.getsockname()[1])
        cases = [
            (["--health-port", "abc"], 2, "--health-port: expected a port number, got 'abc'"),
            (["--health-port", "70000"], 2, "--health-port: a port is 0 to 65535"),
            (["--health-port", "-1"], 2, "--health-port"),
            (["--health-port", taken], 1, f"cannot serve /health on 127.0.0.1:{taken}"),
            (["--health-host", "no-such-host.invalid"], 1, "cannot serve /health on"),
        ]
        for args, code, words in cases:
            done = subprocess.run([*base, *args], capture_output=True, text=True, timeout=60)
            assert done.returncode == code, done.stderr
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and words in lines[0] and "Traceback" not in done.stderr


async def test_health_port_off_serves_none(tmp_path: Path):
    """`--health-port off`: the recorder runs (it waits for the bus) without /health."""
    recorder = RecorderProcess("nats://127.0.0.1:1", tmp_path / "store", tmp_path / "rec.log")
    recorder.extra = ["--health-port", "off"]
    try:
        recorder.start()
        await recorder.wait_log("cannot reach the bus")
        assert await recorder.terminate() == 0
    finally:
        recorder.kill()
    assert "recorder health at" not in recorder.text() and "stopped: " in recorder.text()
