"""Backfill of a 10-minute gap at 1,000 ticks/s: how many requests, against the fewest the
data allows, and how long under IB's pacing rules.

    python -m bench.backfill [--minutes 10] [--rate 1000] [--scale 0.01]

The simulator's ES market runs at `--rate` events/s (quotes and trades together, no bursts)
and is given its past at once (`GatewaySimulator.make_past`: the feed's own batches, stamped
with their times, kept on the tape history is answered from). A fresh store holds one open
`ib_disconnected` gap of `--minutes` per stream a server records by default (ES `all_last`
and `bid_ask`), ended over a minute ago, so the backfill does not wait for live ticks; the
store's `Backfill` fills them over a real ib_insync connection, its `Pacer` and the
simulator's pacing both on IB's rules with every time multiplied by `--scale`.

The lower bound is the fewest `reqHistoricalTicks` pages that can cover the gap's IB seconds,
counted on the simulator's own tape: a page holds 1,000 ticks forward from a second and always
ends with its whole last second (IB's rule), so the greedy cover is the fewest. Requests are
printed as a ratio to it, and the time as a ratio to the least the pacing rules allow for that
many pages (the 60-in-10-minutes rule binds: ceil(pages / 60) - 1 windows), with what the same
count of requests means at IB's real rules.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import tempfile
import time
from bisect import bisect_left, bisect_right

from bench.throughput import machine, say
from ibstream.gateway import SESSION_DATE, GatewaySimulator
from ibstream.gateway.tape import Tape
from ibstream.ib.pacing import Pacer, PacingRules
from ibstream.ib.source import IBSource
from ibstream.store import fill, gaps, layout
from ibstream.store.backfill import Backfill
from ibstream.store.recorder import Recorder

ES = 637533641  # the front month on the session day the tests pin (SESSION_DATE)
STREAMS = ("all_last", "bid_ask")
PAGE = 1000
NS = fill.NS
RULES = PacingRules()


def fewest_pages(tape: Tape, what: str, lo: int, hi: int) -> tuple[int, int]:
    """(pages, ticks) covering IB seconds [lo, hi]: 1,000 forward, the last second whole."""
    times = tape.series[what].times
    at, end = bisect_left(times, lo), bisect_right(times, hi)
    pages, ticks = 0, end - at
    while at < end:
        pages += 1
        cut = min(at + PAGE, end)
        while cut < end and times[cut] == times[cut - 1]:
            cut += 1  # the rest of the page's last second comes with it
        at = cut
    return pages, ticks


def pacing_floor(requests: int, rules: PacingRules) -> float:
    """The least time `requests` pages take under `rules` (the window rule binds)."""
    return max(0, math.ceil(requests / rules.window_count) - 1) * rules.window_seconds


async def run(args: argparse.Namespace) -> None:
    rules = RULES.scaled(args.scale)
    gap_seconds = round(args.minutes * 60)
    past = gap_seconds + 2 * 61  # a minute before the gap, and over a minute after it
    async with GatewaySimulator(
        port=0,
        seed=1,
        rate=args.rate,
        bursts=False,
        history_pacing=rules,
        session_date=SESSION_DATE,
    ) as sim:
        started = time.perf_counter()
        made = sim.make_past(past, [ES])
        say(
            f"past: {past} s of ES at {args.rate:,.0f} events/s made at once "
            f"({made:,} events in {time.perf_counter() - started:.1f} s)"
        )
        start_ns = (int(time.time()) - past + 61) * NS + NS // 2
        end_ns = start_ns + gap_seconds * NS
        with tempfile.TemporaryDirectory() as tmp:
            root = layout.open_root(tmp)
            server = f"bench{random.randint(0, 1 << 30)}"
            rows = [
                gaps.row(ES, kind, start_ns, end_ns, "ib_disconnected", server, None)
                for kind in STREAMS
            ]
            gaps.write(root, server, rows)
            source = IBSource("127.0.0.1", sim.port, random.randint(1, 10_000))
            await source.start(wait=10)
            recorder = Recorder(root)
            await recorder.start(server)
            backfill = Backfill(recorder, source, Pacer(rules))
            began = time.perf_counter()
            try:
                await backfill.fill_open()
                took = time.perf_counter() - began
            finally:
                await recorder.stop()
                await source.stop()
            settled = gaps.latest(layout.gaps_dataset(root).to_table()).to_pylist()
        report(args, sim, backfill, settled, start_ns, end_ns, took, rules)


def report(
    args: argparse.Namespace,
    sim: GatewaySimulator,
    backfill: Backfill,
    settled: list[dict],
    start_ns: int,
    end_ns: int,
    took: float,
    rules: PacingRules,
) -> None:
    tape = sim.tape(ES)
    lo, hi = start_ns // NS, end_ns // NS  # the IB seconds the gap needs
    bound = 0
    say(f"gap: {args.minutes} min of ES, IB seconds {lo}-{hi}")
    for kind in STREAMS:
        what = fill.WHAT[kind]
        pages, ticks = fewest_pages(tape, what, lo, hi)
        # a fill asks from the second before the gap's (a live tick's IB second may lag it)
        asked_pages, fetched = fewest_pages(tape, what, lo - 1, hi)
        bound += pages
        row = next(r for r in settled if r["tick_type"] == kind)
        asked = row["message"].rsplit(", ", 1)[-1].split(" ")[0]
        whole = "every one" if row["ticks_added"] == fetched else f"NOT the {fetched:,}"
        say(
            f"  {kind:8s} {row['status']}: {row['ticks_added']:,} ticks added ({whole} of the "
            f"seconds asked for: the gap's {ticks:,} and the second before); {asked} requests, "
            f"fewest for the gap {pages}: {int(asked) / pages:.3f}x (for the seconds asked "
            f"for {asked_pages})"
        )
    requests = sim.history_requests
    floor = pacing_floor(bound, rules)
    say(
        f"requests: {requests} answered ({backfill.pacer.requests} sent, "
        f"{sim.pacing_violations} pacing violations), fewest the data allows {bound}: "
        f"{requests / bound:.3f}x"
    )
    versus = f"{floor:.1f} s: {took / floor:.2f}x" if floor else "0 s (one window)"
    say(
        f"time: {took:.1f} s under IB's rules scaled by {args.scale:g} (60 requests per "
        f"{rules.window_seconds:g} s); the least those rules allow for {bound} pages is {versus}"
    )
    real = pacing_floor(requests, RULES)
    say(
        f"at IB's real rules (60 requests / 10 min) {requests} requests take at least "
        f"{real / 60:.0f} min ({real / 60 / args.minutes:.1f}x the gap's length): a "
        f"{args.minutes}-minute gap at {args.rate:,.0f} ticks/s is "
        f"{requests / RULES.window_count:.1f} windows of IB's budget"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="the gap's length")
    parser.add_argument("--rate", type=float, default=1000.0, help="ES events per second")
    parser.add_argument(
        "--scale", type=float, default=0.01, help="IB's pacing times multiplied by this"
    )
    args = parser.parse_args()
    say(f"bench.backfill on {machine()}")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
