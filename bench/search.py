"""The highest rate a consumer sustains: the simulator offers a rate, the consumer keeps up
when every one of its clients receives at least 95 % of what was offered in the window and
none was dropped.

The search doubles the offered rate until a probe fails, then bisects between the last rate
kept up with and the first one missed; a rate counts as missed when a second probe at it
misses too (the machine is shared: a burst of other work can sink one window). After a
failed probe the simulator pauses, the consumer is replaced (a fresh process and
connections) and the bench waits until the backlog upstream of it has drained (counts stop
moving), so one failure does not spill into the next probe. Offered = events the simulator's
market produced in the window (with BidAsk + Last subscribed, each event is exactly one tick
to each client).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.procs import Consumer
from ibstream.gateway import GatewaySimulator

KEEP_UP = 0.95
MAX_RATE = 1_000_000
SETTLE = 0.5  # seconds at a new rate before its window starts
DRAIN_LIMIT = 10.0  # seconds to wait for a backlog to drain


@dataclass(frozen=True)
class Probe:
    offered: float  # ticks/s offered to each client
    slowest: float  # ticks/s received by the slowest client
    total: float  # ticks/s received by all clients together
    closed: int  # clients dropped

    @property
    def kept_up(self) -> bool:
        return not self.closed and self.slowest >= KEEP_UP * self.offered


async def probe(
    sim: GatewaySimulator, con_id: int, who: Consumer, rate: float, window: float
) -> Probe:
    market = sim.market(con_id)
    sim.set_rate(rate, con_id)
    await asyncio.sleep(SETTLE)  # the pipeline reaches the new rate: not measured
    before, _ = await who.counts()
    events, t0 = market.events, time.perf_counter()
    await asyncio.sleep(window)  # the measurement window itself
    after, closed = await who.counts()
    elapsed = time.perf_counter() - t0
    got = [b - a for a, b in zip(before, after, strict=True)]
    return Probe((market.events - events) / elapsed, min(got) / elapsed, sum(got) / elapsed, closed)


async def recover(sim: GatewaySimulator, con_id: int, who: Consumer) -> None:
    """Offer nothing, replace the consumer (its connections and what was queued for them go),
    then wait until its counts stop moving (what is still queued upstream has arrived)."""
    sim.set_rate(0, con_id)
    await who.restart()
    counts, _ = await who.counts()
    end = time.monotonic() + DRAIN_LIMIT
    while time.monotonic() < end:
        await asyncio.sleep(0.25)  # polling a child process's counters: no event to await
        now, _ = await who.counts()
        if now == counts:
            break
        counts = now


async def sustained(
    sim: GatewaySimulator,
    con_id: int,
    who: Consumer,
    *,
    start: float,
    window: float,
    refine: int,
    say: Callable[[str], None],
) -> Probe | None:
    """The best probe kept up with, or None when even the lowest rate tried was missed."""
    best: Probe | None = None
    low, high, rate = 0.0, 0.0, start
    for _ in range(40):
        for attempt in range(2):  # a miss is tried once more: other load comes and goes
            result = await probe(sim, con_id, who, rate, window)
            say(
                f"    offered {result.offered:>9,.0f}/s  slowest got {result.slowest:>9,.0f}/s  "
                f"all {result.total:>10,.0f}/s  dropped {result.closed}  "
                + ("kept up" if result.kept_up else "missed" + " again" * attempt)
            )
            if result.kept_up:
                break
            await recover(sim, con_id, who)
        if result.kept_up:
            best, low = result, rate
        else:
            high = rate
        if not high:  # still ramping up
            if rate >= MAX_RATE:
                break
            rate *= 2
        elif not low:  # the first rate was missed: ramp down
            if rate < start / 8:
                break
            rate /= 2
        elif refine > 0 and high / low > 1.02:
            refine -= 1
            rate = (low + high) / 2
        else:
            break
    sim.set_rate(0, con_id)
    return best


def add_search_options(parser: argparse.ArgumentParser) -> None:
    """The options of a bench that compares best 1-client rates over rounds."""
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--window", type=float, default=1.5)
    parser.add_argument("--refine", type=int, default=2)


def compare(option: str, without: list[float], with_: list[float], goal: float) -> str:
    """Two lines: the best rate without `option` and with it, their ratio against `goal`."""
    best, best_with = max(without, default=0.0), max(with_, default=0.0)
    ratio = best_with / best if best else float("nan")
    return (
        f"1 client without {option}: {best:,.0f} ticks/s (best of {len(without)})\n"
        f"1 client with {option}:    {best_with:,.0f} ticks/s; ratio {ratio:.2f}  "
        f"goal >= {goal:g} {'met' if ratio >= goal else 'not met'}"
    )
