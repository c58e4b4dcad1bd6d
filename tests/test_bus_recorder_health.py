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
from ibstream.model import Tick, TickType
from tests.bus_fixtures import nats_server  # noqa: F401 (the fixture)
from tests.bus_record_fixtures import RUN, WAIT, Publisher, RecorderProcess, recording, stored
from tests.store_data import ES, sample_ticks


@pytest.fixture
def bus(nats_server: NatsServer) -> NatsServer:  # noqa: F811 (the fixture, by name)
    return nats_server


async def health(url: str, method: str = "GET") -> tuple[int, dict]:
    async with httpx.AsyncClient(timeout=WAIT) as http:
        answer = await http.request(method, url)
    return answer.status_code, answer.json() if answer.content else {}


async def health_when(url: str, holds) -> tuple[int, dict]:
    """`/health` once `holds(body)` (another process's state: polled with a deadline)."""
    async with asyncio.timeout(WAIT):
        while True:
            code, body = await health(url)
            if holds(body):
                return code, body
            await asyncio.sleep(0.05)


async def until(url: str, status: str) -> tuple[int, dict]:
    return await health_when(url, lambda body: body["status"] == status)


def assert_all_stored(store: Path, seqs: dict[TickType, int]) -> None:
    """Every stream holds sequences 1..its last, each once: nothing lost, nothing twice."""
    rows = stored(store)
    for kind, top in seqs.items():
        mine = sorted(r["sequence"] for r in rows if r["tick_type"] == kind.value)
        assert mine == list(range(1, top + 1)), kind


def warnings(log: str) -> list[str]:
    return [line.split(": ", 1)[1] for line in log.splitlines() if " WARNING " in line]


async def test_degraded_while_nats_is_unreachable_at_start_then_ok(tmp_path: Path):
    """Nobody listens on the bus's port: 503, the bus not connected and why; NATS started
    on that port: 200, and what is published is recorded."""
    bus = NatsServer(tmp_path / "nats", port=free_port())
    ticks = sample_ticks(ES, 200)
    seqs: dict[TickType, int] = {}
    with recording(bus.url, tmp_path) as recorder:
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
            assert await health(url, "HEAD") == (503, {})
            bus.start()
            # NATS reached, but no source yet: nothing to read
            code, body = await health_when(url, lambda body: body["bus"]["connected"])
            assert (code, body["status"], body["bus"]["consuming"]) == (503, "degraded", False)
            async with Publisher(bus.url) as source:
                await source.first_run(ticks, seqs)
            code, body = await until(url, "ok")
            assert code == 200 and body["bus"]["connected"] is True
            assert "last_error" not in body["bus"] and "down_seconds" not in body["bus"]
            assert body["bus"]["consuming"] is True
            assert body["recorder"]["ticks_recorded"] == len(ticks)
            assert body["recorder"]["runs"] == [RUN]
            assert await recorder.terminate() == 0
        finally:
            bus.kill()
    log = recorder.text()
    assert log.count("recorder health at ") == 1 and log.count("cannot reach the bus") == 1
    assert_all_stored(recorder.store, seqs)


async def test_degraded_while_nats_is_killed_and_ok_again(bus: NatsServer, tmp_path: Path):
    """NATS kill -9ed while recording: 503 and one warning line; NATS started again on its
    store: 200, and ticks published after are in the store (nothing lost, nothing twice)."""
    ticks = sample_ticks(ES, 300)
    seqs: dict[TickType, int] = {}
    with recording(bus.url, tmp_path) as recorder:
        url = await recording_200(recorder, ticks[:200], seqs)
        await kill_and_restart(bus, recorder, url)
        async with Publisher(bus.url) as source:
            await source.ticks(RUN, ticks[200:], seqs)
            await source.wait_acked()
        assert (await health(url))[1]["recorder"]["ticks_recorded"] == len(ticks)
        assert await recorder.terminate() == 0
    assert_all_stored(recorder.store, seqs)


async def recording_200(recorder: RecorderProcess, ticks: list[Tick], seqs: dict) -> str:
    """`recorder` started, a source run's first `ticks` recorded: its /health URL."""
    recorder.start()
    url = await recorder.health_url()
    async with Publisher(recorder.bus_url) as source:
        await source.first_run(ticks, seqs)
    return url


async def kill_and_restart(bus: NatsServer, recorder: RecorderProcess, url: str) -> None:
    """NATS kill -9ed: `/health` degraded and one warning line; started again: ok."""
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
    outage = warnings(recorder.text())[before:]
    assert [w.split(" at ")[0] for w in outage] == ["lost the bus", "reconnected to the bus"]


async def test_degraded_while_the_store_cannot_be_written(bus: NatsServer, tmp_path: Path):
    """The store's directory gone: 503 with the store's problem; back: 200, all written."""
    ticks = sample_ticks(ES, 400)
    seqs: dict[TickType, int] = {}
    with recording(bus.url, tmp_path) as recorder:
        url = await recording_200(recorder, ticks[:200], seqs)
        async with Publisher(bus.url) as source:
            await store_away_and_back(recorder, source, url, ticks[200:], seqs)
            await source.wait_acked()
        assert await recorder.terminate() == 0
    assert_all_stored(recorder.store, seqs)


async def store_away_and_back(
    recorder: RecorderProcess, source: Publisher, url: str, more: list[Tick], seqs: dict
) -> None:
    aside = recorder.store.with_name("store-aside")
    recorder.store.rename(aside)
    await source.ticks(RUN, more, seqs)
    code, body = await until(url, "degraded")
    assert code == 503 and body["bus"]["connected"] is True and body["store"]["ok"] is False
    assert "cannot write to the tick store" in body["store"]["problem"]
    aside.rename(recorder.store)
    code, body = await until(url, "ok")
    assert code == 200 and body["store"]["ok"] is True and "problem" not in body["store"]


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
    with recording("nats://127.0.0.1:1", tmp_path, "--health-port", "off") as recorder:
        recorder.start()
        await recorder.wait_log("cannot reach the bus")
        assert await recorder.terminate() == 0
    assert "recorder health at" not in recorder.text() and "stopped: " in recorder.text()
