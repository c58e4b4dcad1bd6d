"""The sync Client from a plain thread and from inside a running asyncio loop (as in a
Jupyter cell), with progress, interruption and clean closing."""

from __future__ import annotations

import _thread
import asyncio
import signal
import threading
from collections.abc import Iterator

import pytest

from ibstream.client import Client
from ibstream.client.progress import Progress
from ibstream.errors import ContractNotFound, InvalidTickType
from ibstream.server.run import ServerHandle
from tests.client_fixtures import threaded_server as run_threaded_server
from tests.conftest import assert_contiguous


@pytest.fixture
def threaded_server() -> Iterator[ServerHandle]:
    with run_threaded_server() as server:
        yield server


def check_client(url: str) -> None:
    with Client(url) as client:
        assert client.state == "connected"
        frame = client.collect("ES", limit=40, progress=False)
        assert len(frame) == 40
        with client.stream("ES", "last") as stream:
            ticks = [next(stream) for _ in range(5)]
            assert_contiguous([t["sequence"] for t in ticks])
            assert stream.contract["symbol"] == "ES"
        assert not stream.active
        list(stream)  # what was still queued, then the end: no hang
        with pytest.raises(ContractNotFound):
            client.stream("NOSUCH", "last")
        with pytest.raises(InvalidTickType):
            client.collect("ES", "trades", limit=1)
        assert client.ping() >= 0
    assert client.state == "closed"


def test_sync_client_in_a_plain_script(threaded_server):
    check_client(threaded_server.url)


async def test_sync_client_inside_a_running_event_loop(threaded_server):
    assert asyncio.get_running_loop().is_running()
    check_client(threaded_server.url)  # blocking calls, no "event loop is already running"


def test_sync_client_from_another_thread(threaded_server):
    results: list = []
    worker = threading.Thread(
        target=lambda: results.append(Client(threaded_server.url).collect("ES", limit=10)),
    )
    worker.start()
    worker.join(30)
    assert len(results[0]) == 10


def test_collect_shows_progress(threaded_server, capsys):
    with Client(threaded_server.url) as client:
        frame = client.collect("ES", limit=30, progress=True)  # forced: stderr is no terminal
    err = capsys.readouterr().err
    assert len(frame) == 30 and "30/30" in err and "ticks" in err


def test_collect_until_interrupted_returns_what_arrived(threaded_server, monkeypatch):
    shown = Progress.show

    def interrupt_after_ticks(self: Progress, count: int) -> None:
        shown(self, count)
        if count >= 10:
            _thread.interrupt_main()  # as Ctrl-C, or Jupyter's stop button, would

    monkeypatch.setattr(Progress, "show", interrupt_after_ticks)
    # Ctrl-C as a terminal or a kernel has it: an event loop of an earlier test in this
    # process may have left its own SIGINT handler, which interrupt_main() would call instead
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with Client(threaded_server.url) as client:
            frame = client.collect("ES", progress=False)  # no seconds, no limit
            assert len(frame) >= 10
            assert client.subscriptions == []
            assert client.collect("ES", limit=5, progress=False).shape[0] == 5  # still usable
    finally:
        signal.signal(signal.SIGINT, previous)


def test_client_called_from_its_own_callback_is_refused(threaded_server):
    outcome: list = []
    done = threading.Event()

    def on_tick(tick: dict) -> None:
        if not done.is_set():
            try:
                client.ping()
            except RuntimeError as exc:
                outcome.append(exc)
            done.set()

    with Client(threaded_server.url) as client:
        client.stream("ES", "last", on_tick=on_tick)
        assert done.wait(30)
    assert "callback" in str(outcome[0])
