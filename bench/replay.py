"""Replay through the live endpoints: how fast, and how true to the recorded spacing.

    python -m bench.replay [--ticks 300000] [--paced-seconds 3] [--speed 1] [--repeat 3]

A recording of ES (bid_ask + last, a tick every 500 µs of recorded time) is written with the
store's part writer; `ibstream replay` serves it in its own process and the lean clients of
`bench.clients` (their own process) read it:

0. The baseline: the live server's sustained rate to one lean client (simulator -> ib_insync
   -> server, the search of `bench.throughput` step 2), measured first in this run.
1. `--speed max` to one client: ticks/s, one `tick` message per tick, then batched frames
   (`batch_ms` 20), and the ratio of the two; one message per tick over (0), goal >= 0.8.
2. `Client.collect(batch_ms=50)` of the whole replay into a tick frame: ticks/s with JSON
   `ticks` frames and with binary Arrow frames (`format="arrow"`), alternating, best of
   `--repeat` each (a shared machine's noise only ever slows a run), and the ratio of the two.
3. `--speed S` over the first `--paced-seconds` of recorded time: each tick's arrival (this
   machine's clock) against its recorded offset / S from the first tick; the median and p99
   of the absolute error in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.procs import Child
from ibstream.model import ContractInfo, Tick, TickType
from ibstream.store import layout, parts

ES = ContractInfo(637533641, "ES", "FUT", "CME", "USD", "ESZ6", 0.25, "E-mini S&P 500")
SPACING_NS = 500_000  # 2,000 ticks a second of recorded time: a busy ES minute
SERVER_ID = "bench00000000001"


def say(line: str) -> None:
    print(line, flush=True)


def write_recording(path: Path, n: int, seed: int = 1) -> int:
    """n ticks, quotes and trades interleaved (one trade in four), as part files; the first
    receive stamp."""
    rng = np.random.default_rng(seed)
    start = (time.time_ns() // 3_600_000_000_000) * 3_600_000_000_000  # an hour's start
    mid = 5900 + np.cumsum(rng.choice([-0.25, 0, 0.25], n))
    streams: dict[TickType, tuple[list[Tick], list[int]]] = {
        TickType.BID_ASK: ([], []),
        TickType.LAST: ([], []),
    }
    for i in range(n):
        ns = start + i * SPACING_NS
        if i % 4 == 3:
            tick = Tick(ES.contract_id, TickType.LAST, ns, mid[i], 1.0 + i % 5, exchange="CME")
        else:
            tick = Tick(ES.contract_id, TickType.BID_ASK, ns, None, None, mid[i] - 0.125, 10.0)
            tick.ask_price, tick.ask_size = mid[i] + 0.125, 12.0
        tick.ib_time = ns // 1_000_000_000
        ticks, sequences = streams[tick.tick_type]
        ticks.append(tick)
        sequences.append(len(sequences) + 1)
    root = layout.open_root(path)
    for tick_type, (ticks, sequences) in streams.items():
        for part in parts.build_parts(ES, tick_type.value, ticks, sequences, SERVER_ID):
            parts.write_part(root, part, SERVER_ID, ES.to_dict())
    return start


async def replay_process(path: Path, *args: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ibstream",
        "replay",
        str(path),
        "--port",
        "0",
        *args,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    while line := (await asyncio.wait_for(proc.stderr.readline(), 60)).decode():
        if found := re.search(r"serving on (http://\S+)", line):
            asyncio.get_running_loop().create_task(drain(proc.stderr))
            return proc, found[1]
    raise RuntimeError("ibstream replay did not start")


async def drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


async def stop(proc: asyncio.subprocess.Process) -> None:
    proc.terminate()
    await proc.wait()


async def read_all(url: str, n: int, *args: str) -> tuple[float, Child]:
    """Seconds until one lean client has all n ticks (counted from its `subscribed`)."""
    ws_url = url.replace("http", "ws", 1) + "/v2/ws/stream"
    client = await Child.start("bench.clients", ws_url, 1, "--contract", ES.contract_id, *args)
    began = time.perf_counter()
    while (await client.ask("report"))["counts"][0] < n:  # noqa: ASYNC110 (in another process)
        await asyncio.sleep(0.01)
    return time.perf_counter() - began, client


async def live_rate() -> float | None:
    """The live server's sustained 1-client rate (as `bench.throughput` step 2 finds it)."""
    from bench.search import sustained
    from bench.throughput import CONNECTIONS, SERVER_CLIENT_ID, clients
    from ibstream.gateway import GatewaySimulator

    async with GatewaySimulator(
        port=0, seed=1, rate=0, bursts=False, max_write_buffer=256 << 20, history_limit=0
    ) as sim:
        server = await Child.start("bench.serve", sim.port, SERVER_CLIENT_ID, CONNECTIONS)
        who = clients(f"ws://127.0.0.1:{server.ready()['port']}/v2/ws/stream", 1)
        try:
            await who.start()
            found = await sustained(
                sim, ES.contract_id, who, start=8_000, window=1.5, refine=2, say=lambda _: None
            )
            return found.slowest if found is not None else None
        finally:
            await who.stop()
            await server.stop()


async def fast(path: Path, n: int, repeat: int, live: float | None) -> None:
    proc, url = await replay_process(path, "--speed", "max")
    try:
        rates = {}
        for name, args in (("single", ()), ("batched 20 ms", ("--batch-ms", "20"))):
            seconds, client = await read_all(url, n, *args)
            await client.stop()
            rates[name] = n / seconds
            say(f"  --speed max, 1 client, {name}: {rates[name]:,.0f} ticks/s")
        say(f"  batched / single: {rates['batched 20 ms'] / rates['single']:.2f}")
        if live:
            ratio = rates["single"] / live
            met = "met" if ratio >= 0.8 else "not met"
            say(
                f"  single / live 1-client rate ({live:,.0f} ticks/s): {ratio:.2f}  goal >= 0.8 {met}"
            )
        ingest: dict[str, list[float]] = {"json": [], "arrow": []}
        for _ in range(repeat):  # alternating, so both see the same machine
            for frame_format, rates in ingest.items():
                began = time.perf_counter()
                frame = await asyncio.to_thread(collect, url, frame_format)
                seconds = time.perf_counter() - began
                assert len(frame) == n, len(frame)
                rates.append(n / seconds)
        for frame_format, rates in ingest.items():
            say(
                f"  Client.collect(batch_ms=50, format={frame_format!r}) into a frame: "
                f"{max(rates):,.0f} ticks/s (best of {repeat}; "
                f"{', '.join(f'{r:,.0f}' for r in rates)})"
            )
        say(f"  arrow / json: {max(ingest['arrow']) / max(ingest['json']):.2f}")
    finally:
        await stop(proc)


def collect(url: str, frame_format: str):  # noqa: ANN201 (a DataFrame, pandas loads late)
    import ibstream

    with ibstream.Client(url) as client:
        return client.collect("ES", progress=False, batch_ms=50, format=frame_format)


async def paced(path: Path, first_ns: int, seconds: float, speed: float) -> None:
    end = first_ns + int(seconds * 1e9)
    n = int(seconds * 1e9 // SPACING_NS)
    proc, url = await replay_process(path, "--speed", str(speed), "--end", str(end))
    try:
        _, client = await read_all(url, n, "--record")
        records = (await client.ask("records"))["records"]
        await client.stop()
    finally:
        await stop(proc)
    recv = np.array([r[2] for r in records], np.int64)
    arrived = np.array([r[3] for r in records], np.int64)
    expected = (recv - recv[0]) / speed
    error_ms = np.abs((arrived - arrived[0]) - expected) / 1e6
    say(
        f"  --speed {speed:g}, {len(records):,} ticks over {seconds:g} s recorded: timing error "
        f"median {np.median(error_ms):.2f} ms, p99 {np.percentile(error_ms, 99):.2f} ms"
    )


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recording"
        began = time.perf_counter()
        first_ns = write_recording(path, args.ticks)
        say(f"recording: {args.ticks:,} ticks written in {time.perf_counter() - began:.1f} s")
        say("live 1-client rate (the baseline)")
        live = await live_rate()
        say(f"  {live:,.0f} ticks/s" if live else "  n/a")
        await fast(path, args.ticks, args.repeat, live)
        await paced(path, first_ns, args.paced_seconds, args.speed)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=300_000)
    parser.add_argument("--paced-seconds", type=float, default=3.0)
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3, help="collects per format (best kept)")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
