"""One node of a three-node NATS cluster (the stream's leader, three replicas) kill -9ed while
the source streams 2,000 ticks/s: the library clients of both edges get every tick once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from ibstream.bus import wire
from ibstream.bus.nats_server import NatsServer, cluster
from ibstream.client import AsyncClient, Backoff
from ibstream.gateway import GatewaySimulator
from ibstream.server.run import ServerHandle
from tests.bus_fixtures import stopped_at_end
from tests.client_fixtures import EventRecorder
from tests.conftest import WAIT
from tests.test_bus_edge import edge_on
from tests.test_bus_edge_failover import per_stream
from tests.test_client_reconnect import Ticks, assert_exact

TYPES = ("bid_ask", "last")
FAST = Backoff(initial=0.05, maximum=0.5)
RATE = 2_000.0  # ticks per second of the cluster test's market


@pytest.fixture
async def edges() -> AsyncIterator[list[ServerHandle]]:
    async with stopped_at_end() as started:
        yield started


@pytest.fixture
async def nats_cluster(tmp_path: Path) -> AsyncIterator[list[NatsServer]]:
    """Three JetStream nodes routed to each other on loopback ports, once JetStream answers
    (the nodes have elected their meta leader); killed at the end."""
    nodes = cluster(tmp_path / "cluster")
    try:
        for node in nodes:
            node.start()
        nc = await nats.connect([node.url for node in nodes])
        try:
            async with asyncio.timeout(WAIT * 3):
                while True:
                    try:
                        await nc.jetstream().account_info()
                        break
                    except nats.errors.Error:
                        await asyncio.sleep(0.1)  # the election has no event a client sees
        finally:
            await nc.close()
        yield nodes
    finally:
        for node in nodes:
            node.kill()


@pytest.fixture
async def fast_gateway() -> AsyncIterator[GatewaySimulator]:
    gw = GatewaySimulator(port=0, seed=5, rate=RATE, bursts=False)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


async def leader_of_the_stream(urls: list[str], gone: str | None = None) -> str:
    """The name of the node leading the stream's replicas, once it has all three (or, after
    node `gone` was killed, once another leads)."""
    nc = await nats.connect(urls)
    try:
        js = nc.jetstream()
        async with asyncio.timeout(WAIT * 3):
            while True:
                try:
                    info = await js.stream_info(wire.STREAM)
                except nats.errors.Error:
                    info = None
                peers = info.cluster.replicas if info is not None and info.cluster else None
                leader = info.cluster.leader if info is not None and info.cluster else None
                if gone is not None and leader and leader != gone:
                    return leader
                if gone is None and peers is not None and len(peers) == 2 and leader:
                    return leader
                await asyncio.sleep(0.1)  # the cluster elects in its own time: no event here
    finally:
        await nc.close()


async def test_a_nats_node_killed_at_2000_ticks_s_loses_no_tick_at_any_edge(
    nats_cluster: list[NatsServer], fast_gateway: GatewaySimulator, make_server, edges
) -> None:
    urls = [node.url for node in nats_cluster]
    joined = ",".join(urls)
    await make_server(
        ib_port=fast_gateway.port,
        client_id=random.randint(1000, 1_000_000),
        bus=joined,
        bus_replicas=3,
    )
    leader = await leader_of_the_stream(urls)
    edges.append(await edge_on(joined))
    edges.append(await edge_on(",".join(reversed(urls))))
    streams = [Ticks() for _ in edges]
    events = [EventRecorder() for _ in edges]
    clients = [
        AsyncClient(e.url, backoff=FAST, on_event=r) for e, r in zip(edges, events, strict=True)
    ]
    try:
        for client, ticks in zip(clients, streams, strict=True):
            await client.connect()
            await client.stream("ES", TYPES, on_tick=ticks)
        for ticks in streams:
            await ticks.until(lambda t=ticks: len(t.got) >= 2_000, timeout=WAIT * 2)
        before = [len(t.got) for t in streams]
        next(node for node in nats_cluster if node.name == leader).kill()
        for ticks, had in zip(streams, before, strict=True):  # 3 s of the market after the kill
            await ticks.until(lambda t=ticks, n=had: len(t.got) >= n + 6_000, timeout=WAIT * 3)
        assert await leader_of_the_stream(urls, gone=leader) != leader
        for ticks, seen in zip(streams, events, strict=True):
            assert_exact(ticks.got)
            assert min(per_stream(ticks).values()) > 500
            assert not seen.gaps, seen.gaps
    finally:
        await asyncio.gather(*(c.close() for c in clients))
