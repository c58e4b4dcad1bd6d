"""What publishing to the bus costs the live path: the server's sustained rate to one client
with `--bus` (a local nats-server, JetStream on file) over the same server without it,
measured alternately in one run, and the CPU each process spends at one fixed rate.

    python -m bench.bus [--rounds 2] [--window 1.5] [--refine 2] [--fixed 5000]

Goal: >= 0.85. Each round searches the highest rate one WebSocket client keeps up with (see
`bench.search`) from a server without the bus, then from one publishing every tick to NATS;
the best of each across rounds is compared (the machine is shared: a burst of other work
sinks single windows). Then each server is offered `--fixed` ticks/s for a few seconds and
the CPU of the server, nats-server, the client process and this one (the simulator) is
measured. With 2 cores, the source, nats-server, the simulator and the client compete for
them: the ratio is a lower bound of what the bus costs with a core each.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import nats

from bench.history import cpu_seconds
from bench.procs import Child, Consumer
from bench.record import one_client_rate
from bench.search import add_search_options, compare
from bench.throughput import ES, machine, say
from ibstream.bus import wire
from ibstream.bus.nats_server import NatsServer
from ibstream.gateway import GatewaySimulator

CPU_SECONDS = 3.0  # the fixed-rate window CPU is measured over


def cpu_at_fixed_rate(sim: GatewaySimulator, args, cpu: dict[str, float]):
    """What `one_client_rate` runs after its search: `cpu` gets the CPU percent of each
    process while the simulator offers `args.fixed` ticks/s."""

    async def measure(server: Child, who: Consumer) -> None:
        sim.set_rate(args.fixed, ES)
        await asyncio.sleep(1.0)  # reaching the rate: not measured
        pids = {"server": server.proc.pid, "ws client": who.child.proc.pid, **args.pids}
        before, t0 = cpu_seconds(pids), time.perf_counter()
        await asyncio.sleep(CPU_SECONDS)  # the measurement window
        after, elapsed = cpu_seconds(pids), time.perf_counter() - t0
        cpu.update({k: 100 * (after[k] - before[k]) / elapsed for k in after})
        cpu["simulator+bench"] = cpu.pop("client")  # cpu_seconds' name for this process

    return measure


async def bus_messages(url: str) -> int:
    nc = await nats.connect(url)
    try:
        return (await nc.jetstream().stream_info(wire.STREAM)).state.messages
    finally:
        await nc.close()


async def main(args: argparse.Namespace) -> None:
    plain: list[float] = []
    bused: list[float] = []
    cpu_plain: dict[str, float] = {}
    cpu_bus: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        nats_server = NatsServer(Path(tmp) / "nats").start()
        args.pids = {"nats-server": nats_server.process.pid}
        try:
            async with GatewaySimulator(
                port=0, seed=1, rate=0, bursts=False, max_write_buffer=256 << 20, history_limit=0
            ) as sim:
                for n in range(args.rounds):
                    say(f"round {n + 1}: without --bus")
                    if (
                        rate := await one_client_rate(
                            sim, "", args, then=cpu_at_fixed_rate(sim, args, cpu_plain)
                        )
                    ) is not None:
                        plain.append(rate)
                    say(f"round {n + 1}: with --bus")
                    if (
                        rate := await one_client_rate(
                            sim, "", args, nats_server.url, cpu_at_fixed_rate(sim, args, cpu_bus)
                        )
                    ) is not None:
                        bused.append(rate)
            held = await bus_messages(nats_server.url)
        finally:
            nats_server.stop()
    say(f"\nmachine: {machine()}")
    say(compare("--bus", plain, bused, 0.85))
    say(f"CPU % per process at {args.fixed:,.0f} ticks/s (last round; 100 % = one core):")
    for name in ("server", "nats-server", "ws client", "simulator+bench"):
        say(
            f"  {name:<16} without --bus {cpu_plain.get(name, 0.0):5.1f}   "
            f"with --bus {cpu_bus.get(name, 0.0):5.1f}"
        )
    extra = (cpu_bus.get("server", 0.0) - cpu_plain.get("server", 0.0)) / 100 / args.fixed
    say(f"  the bus costs the server {extra * 1e6:.1f} us of CPU per tick at that rate")
    say(f"the bus holds {held:,} messages (ticks and events of {args.rounds} source run(s))")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_search_options(parser)
    parser.add_argument("--fixed", type=float, default=5_000.0)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
