"""A node of a three-node NATS cluster killed while the source streams 2,000 ticks/s: the
stream is replicated three times; the node the edge is connected to dies, the edge carries
on from another node (its client told `bus_disconnected` / `bus_resumed`) and the client
gets every sequence once, none lost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ibstream.bus.nats_server import NatsServer, cluster
from ibstream.gateway import GatewaySimulator
from ibstream.server.run import ServerHandle
from tests.bus_fixtures import stopped_at_end
from tests.conftest import assert_contiguous
from tests.test_bus_edge import connect, edge_on
from tests.test_bus_edge_source import ES, TYPES, take

FAILOVER = 40.0  # seconds a leader election may take on a loaded machine
RATE = 2_000.0  # ticks/s the simulator offers for ES (bid_ask and last together)


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[NatsServer]]:
    started = cluster(tmp_path / "cluster")
    try:
        for node in started:
            node.start()
        yield started
    finally:
        for node in started:
            node.kill()


@pytest.fixture
async def edges() -> AsyncIterator[list[ServerHandle]]:
    async with stopped_at_end() as started:
        yield started


async def test_a_cluster_node_killed_at_2000_ticks_per_second_loses_nothing(
    nodes: list[NatsServer], make_server, gateway: GatewaySimulator, edges: list[ServerHandle]
) -> None:
    urls = ",".join(node.url for node in nodes)
    source = await make_server(bus=urls, bus_replicas=3)
    edges.append(edge := await edge_on(urls))
    client = await connect(edge)
    reply = await client.subscribe(ES, TYPES)
    positions = {s["tick_type"]: s["start_sequence"] for s in reply["streams"]}
    seen: list[tuple[str, int]] = []
    gateway.set_rate(RATE, ES)
    await take(client, 200, positions, seen)
    numbered = source.hub.ticks_in
    port = edge.hub.source.feed.nc.connected_url.port
    doomed = next(node for node in nodes if node.port == port)  # the edge's own node
    doomed.kill()  # kill -9, mid-stream
    await take(client, 10**9, positions, seen, until="bus_disconnected")
    # contiguous across the failover, once the cluster elected new leaders (seconds)
    await take(client, 1_000, positions, seen, timeout=FAILOVER)
    assert source.hub.ticks_in > numbered + 1_000  # the source never stopped numbering
    for tick_type in TYPES:
        assert_contiguous([s for t, s in seen if t == tick_type])
    infos = sorted(m["data"]["status"] for m in client.seen if m["type"] == "info")
    assert infos == ["bus_disconnected"] * len(TYPES) + ["bus_resumed"] * len(TYPES)
    assert edge.hub.source.feed.nc.connected_url.port != port
    await client.close()
