"""A collection wider than one connection: its streams spread over as many connections as
the server's streams-per-connection limit (the `connected` greeting's
`capabilities.max_streams_per_connection`, 20 by default) needs.

`collect` of 15 contracts with two tick types each is 30 streams: one call, so "unsubscribe
first" cannot apply. The client's own connection takes what still fits on it; each further
connection is a helper client with the same settings, closed when the collection ends. The
server's per-IP connection limit (10 by default) still bounds the total: a collection that
would need more connections fails with the server's RateLimitExceeded. SSE opens one
response per contract anyway, so there is nothing to spread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ibstream.client.aio import AsyncClient


class Room:
    """Free stream slots of the connections a collection uses."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.free: dict[int, int | None] = {}  # id(client) -> slots left (None: no limit)

    async def take(self, streams: int, helpers: list[AsyncClient]) -> AsyncClient:
        """A client whose connection has `streams` free slots, opening a helper if none has."""
        for candidate in [self.client, *helpers]:
            if id(candidate) not in self.free:
                self.free[id(candidate)] = await candidate._stream_room()
            left = self.free[id(candidate)]
            if left is None or left >= streams:
                return self._use(candidate, streams)
        helper = await helper_client(self.client)
        helpers.append(helper)
        self.free[id(helper)] = await helper._stream_room()
        return self._use(helper, streams)

    def give_back(self, client: AsyncClient, streams: int) -> None:
        left = self.free.get(id(client))
        if left is not None:
            self.free[id(client)] = left + streams

    def _use(self, client: AsyncClient, streams: int) -> AsyncClient:
        left = self.free[id(client)]
        if left is not None:
            self.free[id(client)] = left - streams
        return client


async def helper_client(client: AsyncClient) -> AsyncClient:
    """Another connection with `client`'s settings (its events go to `client`'s listeners)."""
    same = ("request_timeout", "connect_timeout", "close_timeout", "ping_interval")
    settings = {name: getattr(client.options, name) for name in (*same, "backoff", "max_queue")}
    servers = client._servers.in_order()  # the server in use first, then the others
    helper = type(client)(servers, client.transport, client.token, **settings)
    helper._events.listeners = client._events.listeners
    try:
        return await helper.connect()
    except BaseException:
        await helper.close()
        raise
