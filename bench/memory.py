"""Server memory under a client that never reads, beside a well-behaved client in the same run.

    python -m bench.memory [--cycles 300] [--rate 5000]

The server (`bench.serve`, default limits: 10,000 queued ticks, 20,000 replayed, a ring of
10,000 per stream; a send timeout of an hour, so the client that never reads is measured
rather than cut off) runs in its own process; its resident memory (VmRSS) is read from /proc.
Once ES bid_ask and last have full rings, two clients each run `--cycles` cycles of
`subscribe` (resume_from) + `unsubscribe_all`, one after the other:

- well-behaved: resumes the last 500 ticks of each stream and reads everything;
- hostile: resumes from 0 (a replay of both whole rings, 20,000 ticks) and never reads
  (a 4 KiB receive buffer, nothing taken after the greeting).

Before the replay bound and the drop at unsubscribe, the hostile client grew the server by
hundreds of MB (every replay stayed queued: growth in proportion to the cycles); now it
grows by what one connection may hold (queue_size + replay_size ticks) at most, once: the
second half of its cycles adds about nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from pathlib import Path

import httpx
import orjson
import websockets

from bench.procs import Child
from ibstream.gateway import GatewaySimulator

ES = 637533641
SERVER_CLIENT_ID = 78
TYPES = ("bid_ask", "last")
POLL = 0.005  # seconds between /ws/stats reads while a hostile cycle is handled


def say(line: str) -> None:
    print(line, flush=True)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def subscribe(n: int, resume: dict[str, int]) -> str:
    data = {"contract_id": ES, "tick_types": list(TYPES), "config": {"resume_from": resume}}
    return orjson.dumps({"type": "subscribe", "id": f"s{n}", "data": data}).decode()


def unsubscribe_all(n: int) -> str:
    return orjson.dumps({"type": "unsubscribe_all", "id": f"u{n}"}).decode()


class Keeper:
    """A client holding ES bid_ask + last open and reading all: the streams' positions."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.last: dict[str, int] = dict.fromkeys(TYPES, 0)
        self.full = asyncio.Event()

    async def run(self) -> None:
        await self.ws.send(
            orjson.dumps(
                {
                    "type": "subscribe",
                    "id": "k",
                    "data": {"contract_id": ES, "tick_types": list(TYPES)},
                }
            ).decode()
        )
        async for raw in self.ws:
            msg = orjson.loads(raw)
            if msg["type"] == "tick":
                self.last[msg["data"]["tick_type"]] = msg["data"]["sequence"]
                if min(self.last.values()) >= 10_000:
                    self.full.set()


async def well_behaved(url: str, keeper: Keeper, cycles: int) -> None:
    async with websockets.connect(url, max_size=2**24) as ws:
        await ws.recv()  # connected
        for n in range(cycles):
            await ws.send(subscribe(n, {t: max(0, keeper.last[t] - 500) for t in TYPES}))
            await ws.send(unsubscribe_all(n))
            while b'"unsubscribed"' not in (await ws.recv(decode=False)):
                pass


async def hostile(url: str, http: httpx.AsyncClient, cycles: int, pid: int) -> list[float]:
    """The cycles of a client that never reads; the RSS after each one."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    sock.connect(("127.0.0.1", port))
    seen = []
    async with websockets.connect(url, sock=sock, max_queue=1) as ws:
        await ws.recv()  # connected; nothing is read after this
        me = f"ws 127.0.0.1:{sock.getsockname()[1]}"
        for n in range(cycles):
            await ws.send(subscribe(n, dict.fromkeys(TYPES, 0)))
            await until(http, me, lambda streams: streams > 0)
            await ws.send(unsubscribe_all(n))
            await until(http, me, lambda streams: streams == 0)
            seen.append(rss_mb(pid))
    return seen


async def until(http: httpx.AsyncClient, me: str, ok) -> None:
    """Poll /ws/stats until the hostile connection's stream count passes `ok`."""
    async with asyncio.timeout(30):
        while True:
            subs = (await http.get("/ws/stats")).json()["subscribers"]
            mine = [s for s in subs if s["client"] == me]
            if not mine:
                raise RuntimeError("the hostile connection was closed by the server")
            if ok(len(mine[0]["streams"])):
                return
            await asyncio.sleep(POLL)  # a bench poll: the client never reads


async def main(args: argparse.Namespace) -> None:
    async with GatewaySimulator(
        port=0, seed=1, rate=args.rate, bursts=False, history_limit=0
    ) as sim:
        # a send timeout longer than the run: the hostile client is measured, not cut off
        server = await Child.start("bench.serve", sim.port, SERVER_CLIENT_ID, 50, 3600)
        port, pid = server.ready()["port"], server.proc.pid
        url = f"ws://127.0.0.1:{port}/v2/ws/stream"
        try:
            async with (
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
                websockets.connect(url, max_size=2**24) as ws,
            ):
                await ws.recv()
                keeper = Keeper(ws)
                reading = asyncio.create_task(keeper.run())
                say(f"filling the rings of ES bid_ask and last at {args.rate:,.0f} events/s ...")
                await asyncio.wait_for(keeper.full.wait(), 120)
                sim.set_rate(200.0)
                start = rss_mb(pid)
                await well_behaved(url, keeper, args.cycles)
                polite = rss_mb(pid)
                seen = await hostile(url, http, args.cycles, pid)
                reading.cancel()
        finally:
            await server.stop()
    say(f"\nserver RSS, {args.cycles} cycles of subscribe (resume_from) + unsubscribe_all each")
    say(f"  at start (rings full)                  {start:8.1f} MB")
    say(f"  after the well-behaved client          {polite:8.1f} MB  (+{polite - start:.1f})")
    half, after = seen[len(seen) // 2 - 1], seen[-1]
    say(f"  hostile client, half-way               {half:8.1f} MB  (+{half - polite:.1f})")
    say(f"  after the hostile client               {after:8.1f} MB  (+{after - polite:.1f})")
    say(f"  hostile client, highest                {max(seen):8.1f} MB")
    say(
        f"  growth over the hostile second half    {after - half:8.1f} MB  (bounded: about 0; "
        f"unbounded: about the first half's {half - polite:.1f} MB again)"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=300)
    parser.add_argument("--rate", type=float, default=5000.0, help="events/s to fill the rings")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
