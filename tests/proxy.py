"""A TCP proxy on 127.0.0.1:0 that a test controls: cut every connection, or freeze them.

async with TcpProxy(server.port) as proxy:
    client = AsyncClient(f"http://127.0.0.1:{proxy.port}")
    ...
    proxy.cut()        # both sides see the connection reset, as if the network broke
    proxy.freeze()     # stop forwarding (and reading) until thaw(): a peer that hangs
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

_CHUNK = 65536
_SNIFF = 4096  # bytes kept from the start of each client->server direction


class _Link:
    def __init__(self, downstream: asyncio.StreamWriter, upstream: asyncio.StreamWriter):
        self.writers = (downstream, upstream)
        self.sent = bytearray()  # first bytes the client sent (request line, headers)

    def abort(self) -> None:
        for writer in self.writers:
            writer.transport.abort()


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.port = 0
        self.accepted = 0
        self._links: set[_Link] = set()
        self._every: list[_Link] = []
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.thaw()
        self.cut()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def connections(self) -> int:
        return len(self._links)

    @property
    def sniffed(self) -> list[bytes]:
        """Per connection so far, the first bytes the client sent (request line, headers)."""
        return [bytes(link.sent) for link in self._every]

    def cut(self) -> int:
        """Reset every live connection on both sides; returns how many there were."""
        links = list(self._links)
        for link in links:
            link.abort()
        return len(links)

    def freeze(self) -> None:
        """Stop forwarding: nothing is read from either side until thaw()."""
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    async def until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
        self._every.append(link)
        self.accepted += 1
        self._changed.set()
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, link.sent), self._pump(up_reader, writer, None)
            )
        finally:
            self._links.discard(link)
            link.abort()
            self._changed.set()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sniff: bytearray | None
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(_CHUNK):
                await self._flowing.wait()
                if sniff is not None and len(sniff) < _SNIFF:
                    sniff.extend(data[: _SNIFF - len(sniff)])
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
