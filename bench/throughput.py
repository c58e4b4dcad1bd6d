"""Ticks per second from the gateway simulator through the server to 1 and 50 WebSocket clients,
beside a bare `websockets` server pushing the same JSON, measured in the same run.

    python -m bench.throughput [--window 3] [--clients 1 50]

Processes: this one runs the gateway simulator (so it can step the market rate); the ibstream
server (`ibstream serve`) and the clients (`bench.clients`) run in their own processes, as do
the baseline server and its clients. ibstream's figure is the highest offered rate at which
every client received at least 95 % of the ticks and none was dropped; the baseline's is
what a bare server delivers per client when it pushes as fast as it can. Only the ratio
means anything on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
import time
from asyncio.subprocess import DEVNULL, PIPE

import httpx
import orjson

from ibstream.gateway import GatewaySimulator

ES = 637533641
RATES = (250, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def spawn(*args: str, **kw: object) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, "-m", *args, **kw)


async def stop(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    await asyncio.wait_for(proc.wait(), 10)


class Clients:
    """The client process: `report()` returns per-client tick counts so far."""

    async def start(self, url: str, k: int, contract: str | None) -> None:
        args = ["bench.clients", url, str(k)] + ([contract] if contract else [])
        self.proc = await spawn(*args, stdin=PIPE, stdout=PIPE)
        line = await self.proc.stdout.readline()
        if b"ready" not in line:
            raise RuntimeError(f"clients failed to start: {line!r}")

    async def report(self) -> dict:
        self.proc.stdin.write(b"report\n")
        await self.proc.stdin.drain()
        return orjson.loads(await self.proc.stdout.readline())

    async def stop(self) -> None:
        self.proc.stdin.close()
        await stop(self.proc)


async def wait_healthy(url: str, deadline: float = 20.0) -> None:
    """Poll /health until the server subprocess answers (it has no other way to signal)."""
    async with httpx.AsyncClient() as http:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(f"{url}/health")).json()["ib"]["connected"]:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"server at {url} did not become healthy in {deadline:g} s")


async def window_counts(clients: Clients, seconds: float) -> tuple[list[int], float, int]:
    before = await clients.report()
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)  # a measurement window, not synchronisation
    after = await clients.report()
    deltas = [b - a for a, b in zip(before["counts"], after["counts"], strict=True)]
    return deltas, time.perf_counter() - t0, after["closed"]


async def bare_baseline(k: int, window: float) -> float:
    port = free_port()
    server = await spawn("bench.bare_server", str(port), str(k), stdout=PIPE)
    try:
        await server.stdout.readline()
        clients = Clients()
        await clients.start(f"ws://127.0.0.1:{port}", k, None)
        await window_counts(clients, 0.5)  # warm up
        deltas, elapsed, _ = await window_counts(clients, window)
        await clients.stop()
        return min(deltas) / elapsed
    finally:
        await stop(server)


async def ibstream_sustained(k: int, window: float) -> tuple[float, float]:
    """Highest per-client delivered rate at which every client keeps up."""
    async with GatewaySimulator(
        port=0, seed=1, rate=RATES[0], bursts=False, max_write_buffer=64 << 20
    ) as sim:
        port = free_port()
        server = await spawn(
            "ibstream",
            "serve",
            "--port",
            str(port),
            "--ib-port",
            str(sim.port),
            "--client-id",
            "77",
            "--max-connections-per-ip",
            str(k + 1),
            stderr=DEVNULL,
        )
        try:
            await wait_healthy(f"http://127.0.0.1:{port}")
            clients = Clients()
            await clients.start(f"ws://127.0.0.1:{port}/v2/ws/stream", k, str(ES))
            best, best_offered = 0.0, 0.0
            for rate in RATES:
                sim.set_rate(rate, ES)
                await window_counts(clients, 0.5)  # settle at the new rate
                market = sim.market(ES)
                e0 = market.events
                deltas, elapsed, closed = await window_counts(clients, window)
                offered = (market.events - e0) / elapsed
                delivered = min(deltas) / elapsed
                print(
                    f"  ibstream {k:>2} clients: offered {offered:>8.0f}/s, slowest client got "
                    f"{delivered:>8.0f}/s ({delivered / offered:.0%}), dropped clients {closed}",
                    flush=True,
                )
                if closed or delivered < 0.95 * offered:
                    break
                best, best_offered = delivered, offered
            await clients.stop()
            return best, best_offered
        finally:
            await stop(server)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=3.0, help="seconds per measurement window")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 50])
    args = parser.parse_args()
    rows = []
    for k in args.clients:
        base = await bare_baseline(k, args.window)
        print(f"  bare websockets {k:>2} clients: {base:>8.0f} msg/s per client", flush=True)
        ours, _ = await ibstream_sustained(k, args.window)
        rows.append((k, base, ours))
    print("\nclients | bare websockets msg/s/client | ibstream sustained ticks/s/client | ratio")
    for k, base, ours in rows:
        print(f"{k:>7} | {base:>28.0f} | {ours:>33.0f} | {ours / base:.3f}")


if __name__ == "__main__":
    asyncio.run(main())
