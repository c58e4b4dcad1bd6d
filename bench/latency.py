"""Tick latency, simulator send -> client receive, measured across processes on one clock.

TWS's tick-by-tick fields have no room for a sub-second stamp (IB's tick time is whole
seconds), so the stamp stays in this process: `SendLog` records every event the simulator's
market produces, with the event's own `time`, which the simulator's feed takes from
`time.time()` right before it writes the batch to the socket. The server numbers the ticks of
each (contract, tick type) stream in arrival order and every client of the stream sees the same
numbers, so sequence s of a stream is the event at index s + offset among the simulator's events
of that kind (quotes for bid_ask, trades for last); the offset is found by matching the ticks'
contents (prices and sizes) against the events'. Each client stamps `time.time_ns()` when the
bytes of a tick arrive; the server's own `recv_ns` splits the latency into the upstream leg
(simulator -> ib_insync) and the server's (hub -> WebSocket -> client).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np

from bench.procs import Child
from ibstream.gateway import GatewaySimulator
from ibstream.gateway.market import Market, Quote

MIN_MATCH = 0.99  # share of ticks whose content must equal the aligned event's


class SendLog:
    """Every event of a market from now until `close()`: content and send time (ns)."""

    def __init__(self, market: Market) -> None:
        self.market = market
        self.sent: dict[str, list[tuple[tuple, int]]] = {"bid_ask": [], "last": []}
        step = market.step

        def logged(n: int, now: float | None = None) -> list:
            events = step(n, now)
            for e in events:
                if isinstance(e, Quote):
                    key = (e.bid, e.ask, e.bid_size, e.ask_size)
                    self.sent["bid_ask"].append((key, int(e.time * 1e9)))
                else:
                    self.sent["last"].append(((e.price, e.size), int(e.time * 1e9)))
            return events

        market.step = logged  # type: ignore[method-assign]

    def close(self) -> None:
        del self.market.step  # back to the class's method


@asynccontextmanager
async def recording_clients(
    sim: GatewaySimulator, con_id: int, url: str, rate: float, clients: int
) -> AsyncIterator[Child]:
    """`clients` recording clients (`bench.clients --record`) of `url` while the simulator
    offers `rate` ticks/s, yielded after a second of warm-up; the rate back to 0 after."""
    sim.set_rate(rate, con_id)
    who = None
    try:
        who = await Child.start("bench.clients", url, clients, "--contract", con_id, "--record")
        await asyncio.sleep(1.0)  # warm-up, not measured
        yield who
    finally:
        sim.set_rate(0, con_id)
        if who is not None:
            await who.stop()


def offset(sent: list[tuple[tuple, int]], content: dict[int, tuple]) -> tuple[int, float]:
    """The offset (event index - sequence) with the most equal contents, and that share."""
    where: dict[tuple, list[int]] = defaultdict(list)
    for i, (key, _) in enumerate(sent):
        where[key].append(i)
    seqs = sorted(content)
    best, share = 0, 0.0
    for seq in seqs[:20]:  # a few starting points, in case the first tick is not in the log
        for index in where.get(content[seq], ()):
            o = index - seq
            hits = sum(1 for s in seqs if 0 <= s + o < len(sent) and sent[s + o][0] == content[s])
            if hits / len(seqs) > share:
                best, share = o, hits / len(seqs)
        if share >= MIN_MATCH:
            break
    return best, share


def measure(log: SendLog, records: list, content: list, since_ns: int) -> dict:
    """p50 / p99 in ms of the end-to-end and upstream latency of ticks received after
    `since_ns`, from the clients' records [tick_type, sequence, server recv_ns, client ns]."""
    by_kind: dict[str, dict[int, tuple]] = defaultdict(dict)
    for (kind, seq), key in content:
        by_kind[kind][seq] = tuple(key)
    total, upstream, matched = [], [], {}
    for kind, seqs in by_kind.items():
        sent = log.sent[kind]
        o, matched[kind] = offset(sent, seqs)
        if matched[kind] < MIN_MATCH:
            continue
        for rkind, seq, server_ns, client_ns in records:
            if rkind == kind and client_ns >= since_ns and 0 <= seq + o < len(sent):
                sent_ns = sent[seq + o][1]
                total.append(client_ns - sent_ns)
                upstream.append(server_ns - sent_ns)
    if not total:
        return {"ticks": 0, "matched": matched}
    ms = np.array([total, upstream]) / 1e6
    p50, p99 = np.percentile(ms, [50, 99], axis=1)
    return {
        "ticks": len(total),
        "matched": matched,
        "p50": p50[0],
        "p99": p99[0],
        "upstream_p50": p50[1],
        "upstream_p99": p99[1],
    }
