"""The sending half of a `/v2/ws/stream` connection: fast, bounded, and honest when cut off.

Speed: each wake-up drains what the subscriber has queued (up to BATCH messages) and hands
the frames to uvicorn's ASGI `send` one after another; when the transport is writable that
send never suspends, so a busy connection pays one deadline per wake-up, not one timeout
object per frame.

Bounds: uvicorn's WebSocket protocol waits for the transport to drain below its high-water
mark before each frame, so at most one frame is buffered beyond that. A send that cannot
proceed for `send_timeout` marks the client dead: SLOW_CONSUMER (its slot is released at
once), one bounded attempt to tell it (error with `last_sent`, close 1008), then the
connection is reset (RST), so a client that reads again learns at once that it was cut off.
Left to the kernel's TCP_USER_TIMEOUT instead (set on the listening socket), the socket would
be dropped without a word to the peer, and a client that then read again would wait for data
that never comes.

Syscalls: uvicorn writes each frame to its transport at once, and asyncio sends every write
that finds the buffer empty straight to the socket: one `send()` (and one TCP segment, with
TCP_NODELAY) per tick. `CorkedProtocol` is uvicorn's Sans-I/O WebSocket protocol (passed as
`Config(ws=...)`) on a transport that gathers the writes of one event-loop pass and sends
them together on the next, so a drain of many frames costs one syscall.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from typing import TYPE_CHECKING

from starlette.types import Send
from starlette.websockets import WebSocket, WebSocketDisconnect
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from ibstream.errors import CloseCode, ErrorCode, StreamError
from ibstream.protocol.encode import Outgoing, error_message
from ibstream.server.settings import ServerSettings
from ibstream.server.subscriber import Subscriber, SubscriberClosed

if TYPE_CHECKING:
    from ibstream.server.connections import Connection, Connections

log = logging.getLogger(__name__)
SEND_FAILED = (WebSocketDisconnect, OSError, RuntimeError)
BATCH = 256  # messages taken per wake-up: bounds how long one connection holds the loop
FLUSH_BYTES = 16_384  # held by a CorkedTransport at most: tens of ticks, one syscall
TRANSPORT_KEY = "ibstream.transport"  # in scope["state"]: the connection's CorkedTransport


class CorkedTransport:
    """A transport that holds writes until the loop's next pass, then writes them as one.

    At most FLUSH_BYTES are held: past that the writes go out at once, so flow control
    (pause_writing / resume_writing, the real transport's) still sees a writer that never
    yields in time to stop it. Closing sends what is held first; abort drops it."""

    def __init__(self, transport: asyncio.Transport):
        self.transport = transport
        self._held: list[bytes] = []
        self._size = 0
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(data)
        self._size += len(data)
        if self._size >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._held:
            data = b"".join(self._held) if len(self._held) > 1 else self._held[0]
            self._held.clear()
            self._size = 0
            if not self.transport.is_closing():  # a gone peer: asyncio would log every write
                self.transport.write(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self._held.clear()
        self.transport.abort()

    def reset(self) -> None:
        """Abort with a RST now. A plain close leaves unsent data to an orphaned socket,
        which the kernel's TCP_USER_TIMEOUT later drops without a word to the peer."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.abort()

    def __getattr__(self, name: str) -> object:  # is_closing, get_extra_info, pause_reading ...
        return getattr(self.transport, name)


class CorkedProtocol(WebSocketsSansIOProtocol):
    """uvicorn's `websockets-sansio` protocol writing through a `CorkedTransport`; it
    changes nothing else (one override: the transport it is given, which it also puts in
    the connection's ASGI `state` as TRANSPORT_KEY, so the writer can reset a connection it
    could not close: ASGI has no abort)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        corked = CorkedTransport(transport)  # type: ignore[arg-type]
        self.app_state = {**self.app_state, TRANSPORT_KEY: corked}  # this connection's scope
        super().connection_made(corked)  # type: ignore[arg-type]


class Writer:
    """Drains a subscriber's queue to one WebSocket; the only task that sends on it."""

    def __init__(
        self,
        websocket: WebSocket,
        send: Send,
        sub: Subscriber,
        settings: ServerSettings,
        connections: Connections,
    ):
        self.ws = websocket
        self.send = send
        self.sub = sub
        self.timeout = settings.send_timeout
        self.observer = settings.sent_observer
        self.connections = connections
        self.untold: StreamError | None = None  # a SLOW_CONSUMER error not queued yet

    async def frame(self, payload: bytes) -> None:
        await self.send({"type": "websocket.send", "text": payload.decode()})
        if self.observer is not None:
            self.observer(payload)

    async def refuse(self, exc: StreamError, code: int) -> None:
        """Tell a client it cannot have a connection, and close."""
        try:
            async with asyncio.timeout(self.timeout):
                await self.frame(error_message(exc).payload)
                await self.ws.close(code, exc.message[:120])
        except (*SEND_FAILED, TimeoutError):
            pass

    async def run(self, conn: Connection) -> None:
        """Send until the subscriber is closed and drained; then close with the code the
        connection ended with (1008 for a slow consumer)."""
        sub, loop, timeout = self.sub, asyncio.get_running_loop(), self.timeout
        send, observer = self.send, self.observer
        items: list[Outgoing] = []
        done = 0
        try:
            async with asyncio.timeout(None) as deadline:
                while True:
                    deadline.reschedule(None)  # waiting for work is not a stalled send
                    items, done = [await sub.get()], 0
                    items += sub.take(BATCH - 1)
                    refresh = 0.0
                    for item in items:
                        # Every send gets at least 0.9 send_timeout, at the cost of one
                        # deadline move per wake-up (or per send_timeout/10 of sending).
                        if (now := loop.time()) > refresh:
                            deadline.reschedule(now + timeout)
                            refresh = now + timeout / 10
                        if item.binary:
                            await send({"type": "websocket.send", "bytes": item.payload})
                        else:
                            await send({"type": "websocket.send", "text": item.payload.decode()})
                        done += 1
                        if observer is not None:
                            observer(item.payload)
                    self.connections.messages_sent += done
        except SubscriberClosed:
            pass
        except TimeoutError:
            self._stalled(items[done:])
        except SEND_FAILED:
            return
        await self._close(conn)

    def _stalled(self, unsent: list[Outgoing]) -> None:
        """A send blocked for send_timeout: the client is cut off as a slow consumer. What
        is still queued is dropped, and `last_sent` is the last sequence per stream that
        reached the socket (not counting the taken but unsent frames)."""
        sub = self.sub
        log.warning("%s: a send blocked for %.1fs, slow consumer", sub.client, self.timeout)
        first_unsent: dict[str, int] = {}
        for item in reversed(unsent):
            if item.spans is not None:
                first_unsent.update((sid, first) for sid, (first, _) in item.spans.items())
            elif item.stream_id is not None and item.sequence is not None:
                first_unsent[item.stream_id] = item.sequence
        error = sub.closed
        if error is None:
            error = StreamError(
                ErrorCode.SLOW_CONSUMER,
                f"a send blocked for {self.timeout}s and the client was disconnected; read "
                "faster, or resubscribe with resume_from = the last sequences you received",
                details=sub.positions(),
            )
            sub.close(error)
        if error.code == ErrorCode.SLOW_CONSUMER and error.details:
            _rewind(error.details, first_unsent)
        self.untold = error

    async def _close(self, conn: Connection) -> None:
        sub = self.sub
        slow = sub.closed is not None and sub.closed.code == ErrorCode.SLOW_CONSUMER
        code = conn.close_code
        if code is None:
            code = CloseCode.POLICY if slow else CloseCode.NORMAL
        try:  # bounded: a peer that takes nothing more is dropped after send_timeout
            async with asyncio.timeout(self.timeout):
                if self.untold is not None:  # what is still queued would leave a gap
                    await self.frame(error_message(self.untold).payload)
                await self.ws.close(code)
        except (*SEND_FAILED, TimeoutError) as exc:  # the peer never learns the code: say so
            log.info(
                "%s: close %s not sent (%s); %s; connection reset",
                sub.client,
                code,
                type(exc).__name__ if str(exc) == "" else exc,
                "slow consumer, error untold" if self.untold is not None else "closing",
            )
            self._reset()

    def _reset(self) -> None:
        """Abort the connection (RST): what it still holds is dropped and the peer is told."""
        transport = self.ws.scope.get("state", {}).get(TRANSPORT_KEY)
        if transport is None:  # not served by CorkedProtocol: uvicorn closes it as before
            log.warning("%s: no transport to reset; the socket waits for the peer", self.sub.client)
            return
        transport.reset()


def _rewind(details: dict, first_unsent: dict[str, int]) -> None:
    """Move SLOW_CONSUMER positions back before the frames that never reached the socket."""
    streams = details.get("streams", [])
    for stream in streams:
        if stream["stream_id"] in first_unsent:
            stream["last_sent"] = min(stream["last_sent"], first_unsent[stream["stream_id"]] - 1)
    if "last_sent" in details:
        last: dict[str, int] = {}
        for stream in streams:
            kind = stream["tick_type"]
            last[kind] = min(last.get(kind, stream["last_sent"]), stream["last_sent"])
        details["last_sent"] = last
