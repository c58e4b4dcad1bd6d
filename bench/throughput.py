"""Fan-out throughput and latency, simulator -> ib_insync -> server -> WebSocket clients, with
every figure beside a baseline measured in the same run.

    python -m bench.throughput [--window 1.5] [--refine 2] [--steps 1 2 3 4] [--batch-ms 20]
                               [--latency-rate 1000] [--latency-seconds 4] [--latency-clients 10]

1. Upstream ceiling: ib_insync alone receiving BidAsk + Last tick-by-tick data from the
   gateway simulator: the highest rate it keeps up with (see `bench.search`).
2. The server's sustained rate to 1 client, over (1).       Goal >= 0.8.
3. The aggregate to 50 clients (ticks/s summed, every client keeping up) over a bare
   `websockets` server sending the same frames (bytes the server sent in step 2) to 50
   clients as fast as it can.                                 Goal >= 0.5.
   Then the same 50 clients with batched frames (`config.batch_ms` 20) over without;
   "n/a" when the server refuses batch_ms.
4. Latency, simulator send -> client receive, p50 / p99 at 1,000 ticks/s to 10 clients
   (see `bench.latency`: one clock, the send stamps kept in this process). Goal p99 <= 5 ms.

Processes: this one runs the gateway simulator (it sets the offered rate and keeps the send
stamps); the server (`bench.serve`, `start_server`), ib_insync alone (`bench.ib_counter`),
the bare server and the clients (`bench.clients`) each run in their own process, so no
two of them share an event loop. The clients are lean (Sans-I/O, ~3 µs a frame): on 2 cores
the full asyncio client would take enough CPU to be the bottleneck of the figures it
measures; one process holds all clients of a step, as more processes would not add cores.
The simulator offers steady rates (no bursts); only ratios mean much on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
from collections.abc import Awaitable
from importlib.metadata import version
from pathlib import Path

from bench.latency import SendLog, measure, recording_clients
from bench.procs import Child, Consumer, IbConsumer, run_note
from bench.search import SETTLE, Probe, search_parser, sustained
from ibstream.gateway import GatewaySimulator

ES = 637533641
SERVER_CLIENT_ID, IB_ALONE_CLIENT_ID = 77, 200
# per-IP connection limit: a search replaces its 50 clients after a missed probe, and the
# server may not have released the old ones' slots when the new ones connect
CONNECTIONS = 500


def say(line: str) -> None:
    print(line, flush=True)


def machine() -> str:
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        pass
    libs = ", ".join(f"{n} {version(n)}" for n in ("ib_insync", "websockets", "uvicorn"))
    return f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}; {libs}"


async def attempt(name: str, work: Awaitable) -> object:
    """A step's result, or None (reported) when it fails: the run never stops on one step."""
    try:
        return await work
    except Exception as exc:  # noqa: BLE001 - any failure of a step is reported, not raised
        say(f"  {name} failed: {exc}")
        return None


async def search(sim: GatewaySimulator, who: Consumer, start: float, args) -> Probe | None:
    await who.start()
    try:
        return await sustained(
            sim, ES, who, start=start, window=args.window, refine=args.refine, say=say
        )
    finally:
        await who.stop()


def clients(url: str, k: int, *options: object) -> Consumer:
    return Consumer("bench.clients", url, k, "--contract", ES, *options)


async def bare(k: int, frames: Path, window: float) -> float:
    """Ticks/s summed over k clients of the bare websockets server, pushing flat out: the
    better of two windows (the server search keeps its best probe too)."""
    server = await Child.start("bench.bare_server", k, frames)
    who = Consumer("bench.clients", f"ws://127.0.0.1:{server.first.split()[1].decode()}", k)
    try:
        await who.start()
        await asyncio.sleep(SETTLE)  # not measured: connections warming up
        best = 0.0
        for _ in range(2):
            before, _ = await who.counts()
            t0 = time.perf_counter()
            await asyncio.sleep(window)  # the measurement window
            after, _ = await who.counts()
            best = max(best, (sum(after) - sum(before)) / (time.perf_counter() - t0))
        return best
    finally:
        await who.stop()
        await server.stop()


async def latency(sim: GatewaySimulator, url: str, args) -> dict:
    log = SendLog(sim.market(ES))
    try:
        rate, k = args.latency_rate, args.latency_clients
        async with recording_clients(sim, ES, url, rate, k) as who:
            since = time.time_ns()
            await asyncio.sleep(args.latency_seconds)  # the measurement window
            answer = await who.ask("records", timeout=60)
    finally:
        log.close()
    return measure(log, answer["records"], answer["content"], since)


def ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value and base else None


def rate(probe: Probe | None, total: bool = False) -> float | None:
    return None if probe is None else probe.total if total else probe.slowest


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def row(step: str, value: float | None, base: str, r: float | None, goal: str, met: bool | None):
    shown = fmt(value)
    verdict = "" if met is None or r is None else ("met" if met else "not met")
    say(
        f"{step:<40} {shown:>10} {base:<28} {'n/a' if r is None else f'{r:.2f}':>6}  {goal} {verdict}"
    )


def table(found: dict, args) -> None:
    ceiling, one = rate(found["ceiling"]), rate(found["one"])
    fifty, bare_fifty = rate(found["fifty"], total=True), found["bare"]
    batched = rate(found["batched"], total=True)
    say(f"\nmachine: {machine()}")
    say(f"{'step':<40} {'ticks/s':>10} {'baseline (same run)':<28} {'ratio':>6}  goal")
    row("1 ib_insync alone (upstream ceiling)", ceiling, "", None, "", None)
    base = f"ceiling {fmt(ceiling)}"
    r = ratio(one, ceiling)
    row("2 server -> 1 client", one, base, r, ">= 0.8", r is not None and r >= 0.8)
    r = ratio(fifty, bare_fifty)
    base = f"bare websockets {fmt(bare_fifty)}"
    row("3 server -> 50 clients, summed", fifty, base, r, ">= 0.5", r is not None and r >= 0.5)
    label = f"3 same, batch_ms={args.batch_ms:g}"
    row(label, batched, f"unbatched {fmt(fifty)}", ratio(batched, fifty), "", None)
    lat = found["latency"] or {}
    if "p99" in lat:
        met = "met" if lat["p99"] <= 5 else "not met"
        say(
            f"4 latency at {args.latency_rate:,} ticks/s to {args.latency_clients} clients: "
            f"p50 {lat['p50']:.2f} ms, "
            f"p99 {lat['p99']:.2f} ms ({lat['ticks']:,} ticks)   goal p99 <= 5 ms {met}"
        )
        say(
            f"  of which simulator -> server (ib_insync): p50 {lat['upstream_p50']:.2f} ms, "
            f"p99 {lat['upstream_p99']:.2f} ms; ticks lined up with sent events: "
            + ", ".join(f"{kind} {share:.1%}" for kind, share in lat["matched"].items())
        )
    else:
        say(f"4 latency: n/a (ticks lined up with sent events: {lat.get('matched', 'none')})")


async def run_steps(sim: GatewaySimulator, url: str, args, found: dict) -> None:
    steps, tmp = set(args.steps), tempfile.TemporaryDirectory()
    frames = Path(tmp.name) / "frames.json"
    with tmp:
        if 1 in steps:
            say("1 ib_insync alone")
            who = IbConsumer(sim.port, IB_ALONE_CLIENT_ID, ES)
            found["ceiling"] = await attempt("ceiling", search(sim, who, 8_000, args))
        if 2 in steps:
            say("2 server -> 1 client")
            start = max(1_000.0, (rate(found["ceiling"]) or 8_000) / 8)
            who = clients(url, 1, "--save", frames)
            found["one"] = await attempt("1 client", search(sim, who, start, args))
        if 3 in steps:
            say("3 bare websockets -> 50 clients")
            found["bare"] = await attempt("bare", bare(50, frames, args.window))
            say("3 server -> 50 clients")
            found["fifty"] = await attempt("50", search(sim, clients(url, 50), 250, args))
            say(f"3 server -> 50 clients, batch_ms={args.batch_ms:g}")
            start = rate(found["fifty"]) or 250
            who = clients(url, 50, "--batch-ms", args.batch_ms)
            found["batched"] = await attempt("batched", search(sim, who, start, args))
        if 4 in steps:
            say(f"4 latency at {args.latency_rate:,} ticks/s to {args.latency_clients} clients")
            found["latency"] = await attempt("latency", latency(sim, url, args))


async def main(args: argparse.Namespace) -> None:
    found: dict = dict.fromkeys(("ceiling", "one", "bare", "fifty", "batched", "latency"))
    started, load = time.monotonic(), os.getloadavg()[0]
    async with GatewaySimulator(
        port=0, seed=1, rate=0, bursts=False, max_write_buffer=256 << 20, history_limit=0
    ) as sim:
        server = await Child.start("bench.serve", sim.port, SERVER_CLIENT_ID, CONNECTIONS)
        try:
            await run_steps(
                sim, f"ws://127.0.0.1:{server.ready()['port']}/v2/ws/stream", args, found
            )
        finally:
            await server.stop()
    table(found, args)
    say(run_note(started, load))


def parse_args() -> argparse.Namespace:
    parser = search_parser(__doc__)
    parser.add_argument("--batch-ms", type=float, default=20.0)
    parser.add_argument("--latency-rate", type=int, default=1_000, help="ticks/s per client")
    parser.add_argument("--latency-seconds", type=float, default=4.0)
    parser.add_argument("--latency-clients", type=int, default=10)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 3, 4], choices=[1, 2, 3, 4])
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
