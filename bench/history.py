"""History on request: ticks/s from the simulator through the server into a tick frame,
beside the same pages fetched by ib_insync alone, in the same run.

    python -m bench.history [--ticks 30000] [--rate 1000] [--repeat 3]

Three processes: the gateway simulator (its own, `--gateway` mode of this module), the
ibstream server (its own, `--server` mode) and this one, the clients. IB's pacing rules are
scaled down a thousandfold on both sides (the simulator's `history_pacing`, the server's
`Pacer`), so the run measures transport, not waiting. This process first subscribes ES tick
by tick until the simulator's tape holds `--ticks` quotes and trades, then, alternating,
best of `--repeat` each (a shared machine's noise only ever slows a run), each after a
whole (scaled) pacing window so none waits for the requests of the one before (the server's
pacer outlives a run); the two server ways swap places every repeat and the frame's ratio
is told per order too:

1. ib_insync alone: `reqHistoricalTicksAsync` pages of 1,000, TRADES then BID_ASK, each
   page from the second after the last one's (the loop every ib_insync user writes), paced.
2. `AsyncClient.history("ES", ("bid_ask", "last"), start, end)`: the server pages IB the
   same way, merges the two in IB-time order, streams Arrow; the client builds the frame.
   One client, connected before the runs, as (1)'s IB is.
3. The same answer's Arrow bytes read by plain httpx and dropped: the server's share of
   (2); what (2) takes beyond it is the client's (framing, decoding, the frame).

Both count the same ticks (checked). Goal: (2) >= 0.8x (1). Each way runs once uncounted
first (imports, connections). Beside the rates, the CPU each process spent a run (simulator,
server, this process): on a shared machine wall time stretches with other work, CPU time
much less, so it says where a run's work is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import resource
import sys
import time
from datetime import UTC, datetime

import orjson

from bench.procs import Child
from ibstream.ib.pacing import Pacer, PacingRules

ES_ID = 637533641
SCALE = 0.001  # IB's pacing a thousand times faster, on both sides
PAGE = 1000


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each child process (user + system) and by this one."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for who, pid in pids.items():
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        out[who] = (int(fields[11]) + int(fields[12])) / tick
    mine = resource.getrusage(resource.RUSAGE_SELF)
    out["client"] = mine.ru_utime + mine.ru_stime
    return out


def say(line: str) -> None:
    print(line, flush=True)


def rules() -> PacingRules:
    return PacingRules().scaled(SCALE)


# -- the child processes ------------------------------------------------------------------


async def gateway_child(rate: float) -> None:
    """The simulator; answers `ticks` with how many quotes and trades its ES tape holds."""
    from ibstream.gateway import GatewaySimulator

    async with GatewaySimulator(
        seed=5, rate=rate, bursts=False, history_pacing=rules(), history_limit=2_000_000
    ) as sim:
        tape = sim.tape(ES_ID).series
        print(orjson.dumps({"port": sim.port}).decode(), flush=True)
        loop = asyncio.get_running_loop()
        while await loop.run_in_executor(None, sys.stdin.readline):
            held = {kind: list(tape[kind].times) for kind in ("TRADES", "BID_ASK")}
            first = max(times[0] for times in held.values() if times) if all(held.values()) else 0
            last = min(times[-1] for times in held.values()) if all(held.values()) else 0
            ticks = sum(len(times) for times in held.values())
            line = {"ticks": ticks, "first": first, "last": last}
            print(orjson.dumps(line).decode(), flush=True)


async def server_child(ib_port: int) -> None:
    """The ibstream server with the scaled pacer; prints its URL."""
    from ibstream.server.run import start_server
    from ibstream.server.settings import ServerSettings

    settings = ServerSettings(
        port=0, ib_port=ib_port, client_id=random.randint(1000, 99_999), log_level="error"
    )
    handle = await start_server(settings)
    try:
        if not handle.source.connected:
            print(orjson.dumps({"failed": "IB not connected"}).decode(), flush=True)
            return
        handle.source.pacer = Pacer(rules(), margin=0.0)
        print(orjson.dumps({"url": f"http://127.0.0.1:{handle.port}"}).decode(), flush=True)
        loop = asyncio.get_running_loop()
        while await loop.run_in_executor(None, sys.stdin.readline):
            pass
    finally:
        await handle.stop()


# -- the two ways -------------------------------------------------------------------------


async def ib_insync_alone(
    ib: object, contract: object, first: int, end: int, pages: list[int]
) -> int:
    """Every TRADES and BID_ASK tick of IB seconds [first, end), paged as users page."""
    pacer, count = Pacer(rules(), margin=0.0), 0
    for what in ("TRADES", "BID_ASK"):
        cursor = first
        while cursor < end:
            start = datetime.fromtimestamp(cursor, UTC)
            await pacer.slot((what, cursor), what)
            ticks = await ib.reqHistoricalTicksAsync(  # type: ignore[attr-defined]
                contract, start, "", PAGE, what, useRth=False
            )
            pages.append(1)
            kept = [t for t in ticks if int(t.time.timestamp()) < end]
            count += len(kept)
            if len(ticks) < PAGE or not kept:
                break
            cursor = int(ticks[-1].time.timestamp()) + 1
    return count


async def through_the_server(client: object, first: int, end: int, pages: list[int]) -> int:
    """`client`: a connected AsyncClient (as the ib_insync way's IB is connected once)."""
    frame = await client.history(  # type: ignore[attr-defined]
        "ES", ("bid_ask", "last"), first, end, progress=False
    )
    pages.append(frame.attrs["history"]["requests"])
    return len(frame)


async def arrow_bytes(url: str, first: int, end: int) -> int:
    """The answer's bytes only; returns its size."""
    import httpx

    params = {"tick_types": "bid_ask,last", "start": first, "end": end, "format": "arrow"}
    params["compression"] = "lz4"  # as the client asks
    size = 0
    async with (
        httpx.AsyncClient(base_url=url, timeout=None, trust_env=False) as http,
        http.stream("GET", "/v2/history/ES", params=params) as response,
    ):
        async for chunk in response.aiter_raw():
            size += len(chunk)
    return size


async def main(args: argparse.Namespace) -> None:
    from ib_insync import IB, Contract

    from ibstream.client import AsyncClient

    gateway = await Child.start("bench.history", "--gateway", "--rate", args.rate)
    server = None
    stack = contextlib.AsyncExitStack()
    ib = IB()
    try:
        port = gateway.ready()["port"]
        await ib.connectAsync("127.0.0.1", port, clientId=random.randint(100_000, 999_999))
        es = Contract(conId=ES_ID, exchange="CME")
        for kind in ("AllLast", "BidAsk"):  # the market runs while someone watches
            ib.reqTickByTickData(es, kind, 0, False)
        say(f"history: filling the simulator's tape with {args.ticks:,} ticks at {args.rate:g}/s")
        while (span := await gateway.ask("span"))["ticks"] < args.ticks:  # noqa: ASYNC110
            await asyncio.sleep(0.5)  # (the tape is in another process)
        for kind in ("AllLast", "BidAsk"):
            ib.cancelTickByTickData(es, kind)
        first, end = span["first"] + 1, span["last"]  # whole seconds
        await asyncio.sleep(max(0.0, end + 1 - time.time()))  # IB answers seconds that are over
        server = await Child.start("bench.history", "--server", port)
        url = server.ready()["url"]
        client = await stack.enter_async_context(AsyncClient(url))
        mine: list[int] = []
        theirs: list[int] = []
        ways = {
            "ib_insync alone": lambda: ib_insync_alone(ib, es, first, end, theirs),
            "server -> frame": lambda: through_the_server(client, first, end, mine),
            "server -> Arrow bytes only": lambda: arrow_bytes(url, first, end),
        }
        rates: dict[str, list[float]] = {name: [] for name in ways}
        pids = {"simulator": gateway.proc.pid, "server": server.proc.pid}
        cpu: dict[str, dict[str, float]] = {name: {} for name in ways}
        counts: dict[str, set[int]] = {name: set() for name in ways}
        # the server's one Pacer outlives a run (each ib_insync run has a fresh one): a
        # server way run right after the other found the scaled 60-a-window rule nearly
        # spent and waited. Every way now starts after a whole pacing window; the two
        # server ways also swap places every repeat and the frame's rate is told both ways
        placed: dict[str, list[float]] = {"first": [], "second": []}
        names = list(ways)
        for name in names:  # once each, not counted: imports and first connections
            await asyncio.sleep(rules().window_seconds)
            await ways[name]()
        mine.clear()
        theirs.clear()
        for repeat in range(args.repeat):
            turn = names if repeat % 2 == 0 else [names[0], names[2], names[1]]
            for name in turn:
                await asyncio.sleep(rules().window_seconds)  # no way pays for the one before
                before = cpu_seconds(pids)
                began = time.perf_counter()
                n = await ways[name]()
                elapsed = time.perf_counter() - began
                for who, used in cpu_seconds(pids).items():
                    spent = (used - before[who]) / args.repeat
                    cpu[name][who] = cpu[name].get(who, 0.0) + spent
                if name.endswith("bytes only"):
                    n = min(counts["server -> frame"])  # the same answer's ticks (run 1 first)
                rates[name].append(n / elapsed)
                counts[name].add(n)
                if name == "server -> frame":
                    placed["first" if turn.index(name) == 1 else "second"].append(n / elapsed)
        ticks = counts["ib_insync alone"] | counts["server -> frame"]
        say(
            f"  {end - first} s of ES, {min(ticks):,} ticks (TRADES + BID_ASK) in "
            f"{len(theirs) // args.repeat} pages by ib_insync, {mine[-1]} by the server; "
            f"best of {args.repeat}"
        )
        for name, values in rates.items():
            say(f"  {name}: {max(values):,.0f} ticks/s")
        ratio = max(rates["server -> frame"]) / max(rates["ib_insync alone"])
        say(f"  server -> frame / ib_insync alone: {ratio:.2f} (goal >= 0.8)")
        if placed["second"]:
            both = {k: max(v) / max(rates["ib_insync alone"]) for k, v in placed.items()}
            say(
                f"  the frame's ratio run before the bytes only: {both['first']:.2f}, after: "
                f"{both['second']:.2f}, mean of both orders: {sum(both.values()) / 2:.2f}"
            )
        say("  CPU a run (mean; the time each process spent, unlike wall time not stretched by")
        say("  other work on the machine):")
        for name, used in cpu.items():
            say("    " + name + ": " + ", ".join(f"{w} {s * 1000:.0f} ms" for w, s in used.items()))
        if len(ticks) != 1:
            say(f"  WARNING: the two counted different ticks: {sorted(ticks)}")
    finally:
        await stack.aclose()
        ib.disconnect()
        if server is not None:
            await server.stop()
        await gateway.stop()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=30_000, help="quotes and trades to fetch")
    parser.add_argument(
        "--rate", type=float, default=1000.0, help="simulated events/s (a busy ES minute)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, the best counts")
    parser.add_argument("--gateway", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--server", type=int, metavar="IB_PORT", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    parsed = parse_args()
    if parsed.gateway:
        asyncio.run(gateway_child(parsed.rate))
    elif parsed.server is not None:
        asyncio.run(server_child(parsed.server))
    else:
        asyncio.run(main(parsed))
