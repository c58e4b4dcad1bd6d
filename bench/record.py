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
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.procs import Child, Consumer
from bench.search import add_search_options, compare, sustained
from bench.throughput import ES, attempt, clients, machine, say
from ibstream.gateway import GatewaySimulator

CLIENT_IDS = iter(range(300, 400))


async def one_client_rate(
    sim: GatewaySimulator,
    record: str,
    args,
    bus: str = "",
    then: Callable[[Child, Consumer], Awaitable[None]] | None = None,
) -> float | None:
    """The best rate one client keeps up with from a server (recording into `record`,
    publishing to `bus` when given); `then` runs on the server and client after the search."""
    server = await Child.start("bench.serve", sim.port, next(CLIENT_IDS), 100, 10, record, bus)
    who = clients(f"ws://127.0.0.1:{server.ready()['port']}/v2/ws/stream", 1)
    try:
        await who.start()
        probe = await attempt(
            "search",
            sustained(sim, ES, who, start=4_000, window=args.window, refine=args.refine, say=say),
        )
        if then is not None:
            await then(server, who)
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
    say(compare("--record", plain, recorded, 0.9))
    say(f"the recordings hold {rows:,} ticks")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_search_options(parser)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
