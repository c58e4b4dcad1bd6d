"""Run the server inside the caller's event loop: tests, notebooks, the CLI and the demo.

`start_server` binds its own socket (so port 0 works and the port is known at once), starts
uvicorn on it without touching signal handlers, and returns a handle whose `stop()` first
completes every stream with `server_shutdown` and only then stops uvicorn, because uvicorn's
own shutdown would cut WebSockets with 1012 and wait forever on endless SSE responses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Any

import uvicorn

from ibstream.errors import ErrorCode, StreamError
from ibstream.ib.source import IBSource
from ibstream.server import guard
from ibstream.server.app import ServerContext, create_app
from ibstream.server.hub import Hub
from ibstream.server.recording import Recording
from ibstream.server.settings import ServerSettings
from ibstream.server.ws_writer import CorkedProtocol
from ibstream.store.layout import open_root
from ibstream.store.recorder import usable_store

if TYPE_CHECKING:
    from ibstream.bus.source import SourceBus

log = logging.getLogger(__name__)
USER_TIMEOUTS = 3


class EmbeddedServer(uvicorn.Server):
    """uvicorn's server without its signal handlers: the caller owns the signals.

    The CLI handles SIGINT/SIGTERM itself so that streams get `complete` before uvicorn
    stops, and inside a notebook the kernel's own SIGINT handling must stay in place.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind_socket(
    host: str, port: int, send_buffer: int | None = None, send_timeout: float | None = None
) -> socket.socket:
    """A listening TCP socket; accepted client sockets inherit its options.

    With `send_timeout`, TCP_USER_TIMEOUT is set where the OS has it: the kernel resets a
    connection whose peer has taken no sent data (a zero receive window included) for
    USER_TIMEOUTS send timeouts, so a client that never reads cannot pin a socket after the
    app gave up on it (after one send timeout, plus one to try to tell the client why).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are
    # TCP, and with Nagle on, a small write waits for the peer's delayed ACK (up to 40 ms)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if send_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    if send_timeout and hasattr(socket, "TCP_USER_TIMEOUT"):
        sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(USER_TIMEOUTS * send_timeout * 1000)
        )
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def socket_url(sock: socket.socket) -> str:
    """`http://HOST:PORT` of a listening socket (bound to every address: loopback's)."""
    host, port = sock.getsockname()[:2]
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}"


class ServerHandle:
    """A running server: `url`, `ws_url`, `port`, `context`; `await stop()` or `async with`."""

    def __init__(
        self,
        server: uvicorn.Server,
        serving: asyncio.Task[None],
        sock: socket.socket,
        context: ServerContext,
        source: IBSource,
        own_source: bool,
    ):
        self.server = server
        self.sock = sock
        self.context = context
        self.source = source
        self._serving = serving
        self._own_source = own_source
        self.port = sock.getsockname()[1]
        self.url = socket_url(sock)
        self.ws_url = "ws" + self.url.removeprefix("http") + "/v2/ws/stream"
        self._stopped = False

    @property
    def hub(self) -> Hub:
        return self.context.hub

    async def stop(self) -> None:
        """Graceful stop: `complete` (server_shutdown) to every stream, close 1001, then exit."""
        if self._stopped:
            return
        self._stopped = True
        try:
            await self.context.shutdown()
            self.server.should_exit = True
            await self._serving  # uvicorn's shutdown also closes the listening socket
        finally:
            if self._own_source:
                await self.source.stop()

    async def __aenter__(self) -> ServerHandle:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def listening_socket(settings: ServerSettings, sock: socket.socket | None) -> socket.socket:
    """The server's socket: bound here from the settings, or the caller's, whose address
    then decides where the server listens (the bind check applies to it)."""
    guard.check_bind(settings)
    if sock is None:
        return bind_socket(
            settings.host, settings.port, settings.socket_send_buffer, settings.send_timeout
        )
    guard.check_bind(replace(settings, host=sock.getsockname()[0]))
    return sock


async def start_server(
    settings: ServerSettings, *, source: IBSource | None = None, sock: socket.socket | None = None
) -> ServerHandle:
    """Start IB source (unless given: then the caller starts and stops it), hub, app, uvicorn.

    Waits up to `settings.ib_connect_timeout` for IB; if IB is not there the server still
    starts (health "degraded") and the source keeps retrying in the background.
    """
    sock = listening_socket(settings, sock)  # first: a busy port fails before IB is asked
    if settings.record:  # and a store that cannot be written, before IB is asked too
        try:
            await asyncio.to_thread(usable_store, open_root(settings.record))
        except BaseException:
            sock.close()
            raise
    own_source = source is None
    if source is None:
        source = IBSource(
            settings.ib_host,
            settings.ib_port,
            settings.client_id,
            connect_timeout=settings.ib_connect_timeout,
            library=settings.ib_lib,
        )
        try:
            await source.start(wait=settings.ib_connect_timeout)
        except StreamError as exc:
            log.warning("%s; serving anyway and retrying in the background", exc.message)
        except BaseException:
            sock.close()
            await source.stop()
            raise
    hub = Hub(source, ring_size=settings.ring_size, grace_seconds=settings.channel_grace_seconds)
    bus = None
    if settings.bus:  # before any client: source_started leads this server_id on the bus
        from ibstream.bus.source import SourceBus

        bus = await SourceBus.start(hub, settings)
    recording = None
    if settings.record:
        try:
            recording = await Recording.start(
                hub,
                settings.record,
                settings.record_flush,
                settings.record_contracts,
                backfill=settings.backfill,
                backfill_from=settings.backfill_from,
            )
        except BaseException:
            sock.close()
            await _stop_bus(bus)
            if own_source:
                await source.stop()
            raise
    try:
        handle = await _serve(hub, settings, sock, source, own_source, recording, bus)
    except BaseException:
        await _stop_bus(bus)
        if own_source:
            await source.stop()
        raise
    log.info("ibstream server on %s (IB %s:%s)", handle.url, settings.ib_host, settings.ib_port)
    return handle


async def start_replay_server(
    settings: ServerSettings, hub: Any, *, sock: socket.socket | None = None
) -> ServerHandle:
    """The same app over a hub that replays a recording instead of streaming IB (any object
    with the hub's interface and a `source` with `status`, `search`, `available`, `stop`;
    see `ibstream.store.replay`). Its source is stopped with the server."""
    sock = listening_socket(settings, sock)
    try:
        handle = await _serve(hub, settings, sock, hub.source, own_source=True)
    except BaseException:
        await hub.source.stop()
        raise
    log.info("ibstream replay server on %s", handle.url)
    return handle


async def _serve(
    hub: Any,
    settings: ServerSettings,
    sock: socket.socket,
    source: Any,
    own_source: bool,
    recording: Recording | None = None,
    bus: SourceBus | None = None,
) -> ServerHandle:
    """The app over `hub`, run by uvicorn on `sock` (closed if the start fails)."""
    app = create_app(hub, settings, recording, bus)
    server, serving = await start_uvicorn(
        app,
        sock,
        ws=CorkedProtocol,  # websockets-sansio, one socket write per loop pass
        ws_max_size=settings.ws_max_size,
        ws_ping_interval=settings.ping_interval,
        ws_ping_timeout=settings.ping_timeout,
        ws_per_message_deflate=False,  # compressing every tick for every client costs more than it saves
        log_level=settings.log_level,
        lifespan="on",
        timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout)),
    )
    return ServerHandle(server, serving, sock, app.state.ibstream, source, own_source)


async def start_uvicorn(
    app: Any, sock: socket.socket, **options: Any
) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """uvicorn (`EmbeddedServer`: the caller owns the signals) serving `app` on `sock`,
    returned once it serves: the server (`should_exit = True` stops it) and the task that
    ends when it stopped. `options`: uvicorn.Config's. If the start fails, `sock` is closed
    and what stopped uvicorn is raised."""
    ready = asyncio.Event()

    async def serving_started() -> None:  # uvicorn calls it on its first tick after startup
        ready.set()

    options = {"log_config": None, "access_log": False, **options}
    config = uvicorn.Config(app, callback_notify=serving_started, **options)
    server = EmbeddedServer(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="ibstream-uvicorn")
    started = asyncio.create_task(ready.wait())
    try:
        await asyncio.wait({serving, started}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.is_set():
            serving.result()  # raises what stopped uvicorn during startup
            raise StreamError(ErrorCode.INTERNAL_ERROR, "the server stopped while starting")
    except BaseException:
        started.cancel()
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)
        sock.close()
        raise
    return server, serving


async def _stop_bus(bus: SourceBus | None) -> None:
    if bus is not None:
        await bus.stop()


async def run_forever(settings: ServerSettings, demo: bool = False) -> None:
    """The CLI's `serve`: run until SIGINT/SIGTERM, then shut down gracefully.

    With `demo`, a gateway simulator is started on a free port first and the source points
    at it. Signals are handled here (not by uvicorn) so shutdown sends `complete` first.
    """
    gateway = None
    if demo:
        from ibstream.gateway import GatewaySimulator

        gateway = GatewaySimulator(port=0, seed=0, rate=20.0)
        await gateway.start()
        settings.ib_host, settings.ib_port = "127.0.0.1", gateway.port
        log.info("gateway simulator on 127.0.0.1:%s", gateway.port)
    try:
        await serve_until_signal(lambda: start_server(settings))
    finally:
        if gateway is not None:
            await gateway.stop()


async def serve_until_signal(start: Callable[[], Awaitable[ServerHandle]]) -> None:
    """Start a server and run it until SIGINT/SIGTERM, then stop it gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        async with await start() as handle:
            log.info("serving on %s (WebSocket %s)", handle.url, handle.ws_url)
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
