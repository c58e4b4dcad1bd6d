"""Edges behind the bus against one server, every figure beside its baseline from the same run.

    python -m bench.bus_edge [--window 1.5] [--refine 2] [--latency-rate 1000]
                             [--latency-seconds 4] [--latency-clients 10] [--clients 100]

1. Tick latency, the source's receive stamp (`recv_ns`, the server's own clock) -> client
   receive, p50 / p99 at 1,000 ticks/s to 10 clients: of a plain server's clients, then of an
   edge's (source -> JetStream -> ordered consumer -> edge -> client). One machine, one clock.
2. The aggregate rate (ticks/s summed, every client keeping up: `bench.search`) to 100
   clients spread over 2 edges (50 each) beside 100 clients on one plain server.

Processes: this one runs the gateway simulator and a nats-server; the plain server, the
source and each edge (`bench.edge_serve`) and the clients (`bench.clients`, lean Sans-I/O)
each run in their own process. CPU seconds per process over each window come from /proc.
On 2 cores the edges, the source, NATS and the clients all share those cores: the edge
figures show the extra hops' cost and what a second process buys on this machine, not the
scale-out edges give on machines of their own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.latency import recording_clients
from bench.procs import Child, Consumer, run_note
from bench.search import Probe, search_parser, sustained
from ibstream.bus.nats_server import NatsServer
from ibstream.gateway import GatewaySimulator

ES = 637533641
CONNECTIONS = 500
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def say(line: str) -> None:
    print(line, flush=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_SECOND


class Spread(Consumer):
    """Clients spread over several servers, counted as one consumer."""

    def __init__(self, parts: list[Consumer]) -> None:
        super().__init__("spread")
        self.parts = parts

    async def start(self) -> None:
        for part in self.parts:
            await part.start()

    async def counts(self) -> tuple[list[int], int]:
        counts, closed = [], 0
        for part in self.parts:
            got, shut = await part.counts()
            counts += got
            closed += shut
        return counts, closed

    async def stop(self) -> None:
        for part in self.parts:
            await part.stop()


def ws(child: Child) -> str:
    return f"ws://127.0.0.1:{child.ready()['port']}/v2/ws/stream"


def clients(url: str, k: int) -> Consumer:
    return Consumer("bench.clients", url, k, "--contract", ES)


async def latency(sim: GatewaySimulator, url: str, args, servers: list[Child]) -> dict:
    """p50 / p99 ms from the source's receive stamp to each client's receive time."""
    rate, k = args.latency_rate, args.latency_clients
    async with recording_clients(sim, ES, url, rate, k) as who:
        since, cpu0 = time.time_ns(), [cpu_seconds(s.proc.pid) for s in servers]
        t0 = time.perf_counter()
        await asyncio.sleep(args.latency_seconds)  # the measurement window
        cpu = [cpu_seconds(s.proc.pid) - c for s, c in zip(servers, cpu0, strict=True)]
        elapsed = time.perf_counter() - t0
        answer = await who.ask("records", timeout=60)
    lags = np.array([(c - r) / 1e6 for _, _, r, c in answer["records"] if c >= since])
    return {
        "p50": float(np.percentile(lags, 50)),
        "p99": float(np.percentile(lags, 99)),
        "ticks": len(lags),
        "cpu": [c / elapsed for c in cpu],
    }


async def aggregate(sim: GatewaySimulator, who: Consumer, args) -> Probe | None:
    await who.start()
    try:
        return await sustained(
            sim, ES, who, start=250, window=args.window, refine=args.refine, say=say
        )
    finally:
        await who.stop()


async def run(sim: GatewaySimulator, nats_url: str, args) -> dict:
    found: dict = {"lat_plain": [], "lat_edge": []}
    say("a plain server, a source (--bus) and 2 edges (--from-bus), all up at once")
    plain = await Child.start("bench.edge_serve", "plain", sim.port, 77, CONNECTIONS)
    source = await Child.start("bench.edge_serve", "source", sim.port, 78, CONNECTIONS, nats_url)
    edges = []
    try:
        for _ in range(2):
            edges.append(await Child.start("bench.edge_serve", "edge", nats_url, CONNECTIONS))
        for round_ in range(args.rounds):  # alternated: the machine's other load hits both
            say(f"1 latency round {round_ + 1}: {args.latency_clients} clients of the server")
            found["lat_plain"].append(await latency(sim, ws(plain), args, [plain]))
            say(f"1 latency round {round_ + 1}: {args.latency_clients} clients of an edge")
            found["lat_edge"].append(await latency(sim, ws(edges[0]), args, [source, edges[0]]))
        say(f"2 {args.clients} clients on the server")
        found["agg_plain"] = await aggregate(sim, clients(ws(plain), args.clients), args)
        say(f"2 {args.clients} clients over 2 edges")
        half = args.clients // 2
        spread = Spread([clients(ws(edges[0]), half), clients(ws(edges[1]), args.clients - half)])
        found["agg_edges"] = await aggregate(sim, spread, args)
    finally:
        for child in [*edges, source, plain]:
            await child.stop()
    return found


def table(found: dict, args) -> None:
    say(
        f"\n1 latency, source receive -> client, {args.latency_rate:,} ticks/s offered to "
        f"{args.latency_clients} clients, {args.rounds} alternated rounds (median of rounds)"
    )
    medians = {}
    for name, key in (("server's own clients", "lat_plain"), ("edge's clients", "lat_edge")):
        rounds = found.get(key) or []
        if not rounds:
            continue
        p50 = float(np.median([r["p50"] for r in rounds]))
        p99 = float(np.median([r["p99"] for r in rounds]))
        medians[key] = (p50, p99)
        each = "; ".join(f"{r['p50']:.2f}/{r['p99']:.2f}" for r in rounds)
        cpu = ", ".join(f"{c:.0%}" for c in rounds[-1]["cpu"])
        say(
            f"  {name:<22} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  (rounds p50/p99: {each}; "
            f"CPU of server, or source + edge: {cpu})"
        )
    if len(medians) == 2:
        (a50, a99), (b50, b99) = medians["lat_plain"], medians["lat_edge"]
        say(f"  edge over server: p50 x{b50 / a50:.2f}, p99 x{b99 / a99:.2f}")
    one, two = found.get("agg_plain"), found.get("agg_edges")
    say(f"2 aggregate to {args.clients} clients (ticks/s summed, every client keeping up)")
    say(f"  one server        {one.total if one else 0:>12,.0f}")
    say(f"  2 edges (50 each) {two.total if two else 0:>12,.0f}")
    if one and two:
        say(f"  ratio 2 edges / one server: {two.total / one.total:.2f}")
    say(
        f"  ({os.cpu_count()} cores: one server is one process, at most one core; 2 edges are "
        "two, but share the cores with the simulator, NATS, the source and the clients, so "
        "they go past one server only as far as those leave room; on separate machines each "
        "edge has its own)"
    )


async def main(args: argparse.Namespace) -> None:
    started, load = time.monotonic(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        nats_server = NatsServer(Path(tmp) / "nats").start()
        try:
            async with GatewaySimulator(
                port=0, seed=1, rate=0, bursts=False, max_write_buffer=256 << 20, history_limit=0
            ) as sim:
                found = await run(sim, nats_server.url, args)
        finally:
            nats_server.stop()
    table(found, args)
    say(run_note(started, load))


def parse_args() -> argparse.Namespace:
    parser = search_parser(__doc__)
    parser.add_argument("--latency-rate", type=int, default=1_000, help="ticks/s offered")
    parser.add_argument("--latency-seconds", type=float, default=4.0)
    parser.add_argument("--latency-clients", type=int, default=10)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3, help="latency rounds per side")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
