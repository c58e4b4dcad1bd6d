"""Every argument of the public client API is checked before anything connects, with an
error that names the argument and what it accepts; and progress bars appear only where a
person watches (a terminal or an IPython kernel), never in a log."""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import sys
import termios
import textwrap

import pytest

from ibstream.client import AsyncClient, Client
from ibstream.client.progress import someone_watches
from ibstream.errors import StreamError

URL = "http://127.0.0.1:9"  # nothing listens: a check that connected first would fail there

CONSTRUCTOR = [
    ({"server": 8001}, TypeError, "server"),
    ({"transport": "grpc"}, ValueError, "transport"),
    ({"token": 123}, TypeError, "token"),
    ({"request_timeout": "10"}, TypeError, "request_timeout"),
    ({"connect_timeout": -1}, ValueError, "connect_timeout"),
    ({"close_timeout": float("nan")}, ValueError, "close_timeout"),
    ({"ping_interval": 0}, ValueError, "ping_interval"),
    ({"max_queue": 0}, ValueError, "max_queue"),
    ({"max_queue": 2.5}, TypeError, "max_queue"),
    ({"backoff": 3}, TypeError, "backoff"),
    ({"on_event": "print"}, TypeError, "on_event"),
]
COLLECT = [
    ({"seconds": "10"}, TypeError, "seconds"),
    ({"seconds": 0}, ValueError, "seconds"),
    ({"limit": 1.5}, TypeError, "limit"),
    ({"limit": -3}, ValueError, "limit"),
    ({"progress": "yes"}, TypeError, "progress"),
    ({"batch_ms": "50", "limit": 5}, ValueError, "batch_ms"),
    ({"contract": 1.5, "limit": 5}, TypeError, "contract"),
    ({"contract": [], "limit": 5}, ValueError, "contract"),
    ({"tick_types": 5, "limit": 5}, TypeError, "tick_types"),
    ({"tick_types": ["bid_ask", "trades"], "limit": 5}, StreamError, "tick type"),
]


@pytest.mark.parametrize("kind", [Client, AsyncClient])
@pytest.mark.parametrize("kwargs, error, name", CONSTRUCTOR)
def test_constructor_arguments_are_checked(kind, kwargs, error, name):
    kwargs = {"server": URL, **kwargs}
    with pytest.raises(error, match=name) as failure:
        kind(**kwargs)
    assert "got" in str(failure.value)


@pytest.mark.parametrize("kwargs, error, name", COLLECT)
def test_collect_arguments_are_checked_before_connecting(kwargs, error, name):
    kwargs = {"contract": "ES", **kwargs}
    client = Client(URL, connect_timeout=1)
    with pytest.raises(error, match=name):
        client.collect(**kwargs)
    assert client.state == "connecting"  # it never tried to connect


@pytest.mark.parametrize("kwargs, error, name", COLLECT)
async def test_async_collect_arguments_are_checked_before_connecting(kwargs, error, name):
    kwargs = {"contract": "ES", **kwargs}
    client = AsyncClient(URL, connect_timeout=1)
    with pytest.raises(error, match=name):
        await client.collect(**kwargs)
    assert client.state == "connecting"


@pytest.mark.parametrize(
    "call, error, name",
    [
        (lambda c: c.stream("ES", on_tick=3), TypeError, "on_tick"),
        (lambda c: c.stream("ES", max_queue="9"), TypeError, "max_queue"),
        (lambda c: c.buffer("ES", max_ticks="100"), TypeError, "max_ticks"),
        (lambda c: c.buffer("ES", max_seconds=-5), ValueError, "max_seconds"),
        (lambda c: c.unsubscribe("ES"), TypeError, "handle"),
        (lambda c: c.contracts(""), ValueError, "symbol"),
        (lambda c: c.contracts(["ES"]), TypeError, "symbol"),
        (lambda c: c.add_listener(None), TypeError, "listener"),
    ],
)
def test_other_calls_name_their_bad_argument(call, error, name):
    with pytest.raises(error, match=name):
        call(Client(URL, connect_timeout=1))


SCRIPT = textwrap.dedent(
    """
    import sys
    from ibstream.client.progress import Progress
    bar = Progress("auto", total=10, desc="ES")
    bar.show(10)
    bar.close(10)
    print("enabled" if bar.enabled else "disabled")
    """
)


def run_with_stderr(stderr: int) -> str:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], stderr=stderr, stdout=subprocess.PIPE, timeout=60
    )
    return done.stdout.decode().strip()


def test_auto_progress_shows_on_a_terminal_and_not_in_a_log(tmp_path):
    log = tmp_path / "run.log"
    with log.open("wb") as file:
        assert run_with_stderr(file.fileno()) == "disabled"
    assert "ES" not in log.read_text()  # no bar lines in the log
    leader, follower = os.openpty()  # a real terminal on stderr, 80 columns wide
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    try:
        assert run_with_stderr(follower) == "enabled"
        os.close(follower)
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
    assert b"10/10" in shown


def test_auto_progress_shows_in_an_ipython_kernel():
    from IPython.core.interactiveshell import InteractiveShell

    assert not someone_watches()  # pytest captures stderr: no terminal
    shell = InteractiveShell.instance()
    try:
        assert someone_watches()
    finally:
        InteractiveShell.clear_instance()
    del shell
