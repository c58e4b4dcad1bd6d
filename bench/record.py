"""What recording costs the live path: the server's sustained rate to one client with
`--record` over the same server without it, measured alternately in one run.

    python -m bench.record [--rounds 2] [--window 1.5] [--refine 2]

Goal: >= 0.9. Each round searches the highest rate one WebSocket client keeps up with (see
`bench.search`) from a server without recording, then from one recording every stream into a
fresh store (zstd Parquet, flushed every second); the best rate of each across rounds is
compared, as the machine is shared and a burst of other work sinks single windows. The store
is then read back to check the recording kept what it was sent.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from bench.procs import Child
from bench.search import sustained
from bench.throughput import ES, attempt, clients, machine, say
from ibstream.gateway import GatewaySimulator

CLIENT_IDS = iter(range(300, 400))


async def one_client_rate(sim: GatewaySimulator, record: str, args) -> float | None:
    server = await Child.start("bench.serve", sim.port, next(CLIENT_IDS), 100, 10, record)
    who = clients(f"ws://127.0.0.1:{server.ready()['port']}/v2/ws/stream", 1)
    try:
        await who.start()
        probe = await attempt(
            "search",
            sustained(sim, ES, who, start=4_000, window=args.window, refine=args.refine, say=say),
        )
        return probe.slowest if probe is not None else None
    finally:
        await who.stop()
        await server.stop()
        sim.set_rate(0, ES)


async def main(args: argparse.Namespace) -> None:
    plain: list[float] = []
    recorded: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with GatewaySimulator(
            port=0, seed=1, rate=0, bursts=False, max_write_buffer=256 << 20, history_limit=0
        ) as sim:
            for n in range(args.rounds):
                say(f"round {n + 1}: without --record")
                if (rate := await one_client_rate(sim, "", args)) is not None:
                    plain.append(rate)
                say(f"round {n + 1}: with --record")
                store = Path(tmp) / f"store-{n}"
                if (rate := await one_client_rate(sim, str(store), args)) is not None:
                    recorded.append(rate)
        from ibstream.store import layout

        rows = sum(
            layout.ticks_dataset(layout.open_root(Path(tmp) / f"store-{n}")).count_rows()
            for n in range(args.rounds)
            if (Path(tmp) / f"store-{n}" / "ticks").exists()
        )
    say(f"\nmachine: {machine()}")
    best_plain, best_rec = max(plain, default=0.0), max(recorded, default=0.0)
    ratio = best_rec / best_plain if best_plain else float("nan")
    say(f"1 client without --record: {best_plain:,.0f} ticks/s (best of {plain and len(plain)})")
    say(
        f"1 client with --record:    {best_rec:,.0f} ticks/s; ratio {ratio:.2f}  goal >= 0.9 "
        f"{'met' if ratio >= 0.9 else 'not met'}"
    )
    say(f"the recordings hold {rows:,} ticks")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--window", type=float, default=1.5)
    parser.add_argument("--refine", type=int, default=2)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
