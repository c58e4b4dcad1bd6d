"""Fixtures of the client tests: servers outside the test's event loop, a server process that
can be killed and restarted, and a recorder of client events.

Test modules wrap these in fixtures of their own (a fixture imported from another module
would shadow its name).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import socket
import sys
import threading
from collections.abc import Iterator

from ibstream.client import ErrorEvent, Gap, StateChange
from ibstream.gateway import GatewaySimulator
from ibstream.server.run import ServerHandle, start_server
from ibstream.server.settings import ServerSettings
from tests.schema_check import SENT

WAIT = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EventRecorder:
    """An `on_event` callback that keeps every event (called from any thread)."""

    def __init__(self) -> None:
        self.events: list = []
        self._lock = threading.Lock()

    def __call__(self, event: object) -> None:
        with self._lock:
            self.events.append(event)

    def of(self, kind: type) -> list:
        with self._lock:
            return [e for e in self.events if isinstance(e, kind)]

    @property
    def states(self) -> list[str]:
        return [e.state.value for e in self.of(StateChange)]

    @property
    def gaps(self) -> list[Gap]:
        return self.of(Gap)

    @property
    def errors(self) -> list[ErrorEvent]:
        return self.of(ErrorEvent)


@contextlib.contextmanager
def threaded_server(**overrides: object) -> Iterator[ServerHandle]:
    """A gateway simulator and a server on their own loop thread: usable from sync tests and
    from async tests that block their own loop (e.g. by calling the sync Client).
    `overrides`: ServerSettings fields."""
    loop = asyncio.new_event_loop()

    def serve() -> None:
        asyncio.set_event_loop(loop)  # ib_insync looks the loop up
        loop.run_forever()

    thread = threading.Thread(target=serve, name="test-server-loop", daemon=True)
    thread.start()

    async def start() -> tuple[GatewaySimulator, ServerHandle]:
        gateway = GatewaySimulator(port=0, seed=3, rate=200.0, bursts=False)
        await gateway.start()
        settings = ServerSettings(
            port=0,
            ib_port=gateway.port,
            client_id=random.randint(1000, 1_000_000),
            max_connections_per_ip=100,
            sent_observer=SENT,
        )
        settings = dataclasses.replace(settings, **overrides)
        return gateway, await start_server(settings)

    gateway, server = asyncio.run_coroutine_threadsafe(start(), loop).result(WAIT)
    try:
        yield server
    finally:

        async def stop() -> None:
            await server.stop()
            await gateway.stop()

        try:
            asyncio.run_coroutine_threadsafe(stop(), loop).result(WAIT)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(WAIT)
            loop.close()


class ServerProcess:
    """`ibstream serve` as a child process on a fixed port, to kill and start again."""

    def __init__(self, ib_port: int):
        self.ib_port = ib_port
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self.log: list[str] = []
        self._drain: asyncio.Task | None = None
        self._logged: asyncio.Condition | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, *extra: str) -> None:
        """Start `ibstream serve` (with `extra` options) and wait until it serves."""
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ibstream",
            "serve",
            "--port",
            str(self.port),
            "--ib-port",
            str(self.ib_port),
            "--client-id",
            str(random.randint(1000, 1_000_000)),
            *extra,
            stderr=asyncio.subprocess.PIPE,
        )
        serving = asyncio.get_running_loop().create_future()
        self._drain = asyncio.create_task(self._read_log(self.proc, serving))
        async with asyncio.timeout(WAIT):
            await serving

    async def _read_log(self, proc: asyncio.subprocess.Process, serving: asyncio.Future) -> None:
        """Keep reading stderr (a full pipe would stall the server); note 'serving on'."""
        assert proc.stderr is not None
        while line := (await proc.stderr.readline()).decode():
            self.log.append(line)
            if self._logged is not None:
                async with self._logged:
                    self._logged.notify_all()
            if "serving on" in line and not serving.done():
                serving.set_result(None)
        if not serving.done():
            serving.set_exception(RuntimeError("server exited:\n" + "".join(self.log[-20:])))

    async def wait_log(self, *words: str, count: int = 1, timeout: float = WAIT) -> list[str]:
        """The first `count` log lines (of any run) holding every one of `words`, waiting
        for them."""
        self._logged = self._logged or asyncio.Condition()

        def found() -> list[str]:
            return [line for line in self.log if all(w in line for w in words)]

        async with asyncio.timeout(timeout), self._logged:
            await self._logged.wait_for(lambda: len(found()) >= count)
        return found()[:count]

    async def terminate(self) -> int:
        """SIGTERM: a clean stop (streams complete, the recording is flushed); its exit code."""
        assert self.proc is not None
        self.proc.terminate()
        code = await self.proc.wait()
        if self._drain is not None:
            await asyncio.wait_for(self._drain, WAIT)
        return code

    async def kill(self) -> None:
        """SIGKILL: no `complete`, no close frame; the socket just dies."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._drain is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._drain, WAIT)
