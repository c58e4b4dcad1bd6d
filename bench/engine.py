"""The live path's cost per call: `DeltaEngine` fed 1, 10, 100 and 1,000 ticks a call, through
its per-tick path (wire rows, `feed`, with the live read `now` after each call) beside
the vectorised path every frame takes (the only path before the per-tick one, and its cost
per call then), in the same run; and `ibstream delta`'s study fed one tick a call.

    python -m bench.engine [--ticks 20000] [--repeat 3]

Ticks: the gateway simulator's ES market (about a third trades), 200 µs apart (5,000
ticks/s). The vectorised path is timed on the first `--vectorised-calls` calls (its cost
per call is flat), the per-tick path on all of them (its trades join the vectorised state
every 4,096, a cost it must carry); both must give equal summaries. Figures are the best of `--repeat`
interleaved runs; the goals: at most 50 µs a call of 1 to 10 ticks, and 5,000 ticks/s fed
one at a time by the study with room to spare. On a shared machine only the ratios mean
much.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import pandas as pd

from bench.classify import machine
from bench.redraw import market_rows
from ibstream.analytics import DeltaEngine
from ibstream.cli.delta_view import DeltaStudy
from ibstream.client.frames import ticks_to_frame

ES = 637533641
START = 1_800_000_000_000_000_000
SIZES = (1, 10, 100, 1000)
GOAL_US = 50.0  # per call of 1 to 10 ticks
GOAL_RATE = 5_000  # ticks/s, one tick a call


def rows_of(n: int) -> list[dict]:
    rows = market_rows(n)
    for i, row in enumerate(rows):
        row["recv_ns"] = START + i * 200_000
    return rows


def per_tick(batches: list[list[dict]]) -> tuple[float, pd.DataFrame]:
    engine = DeltaEngine(window="60s", max_bars=1, max_trades=1)
    started = time.perf_counter()
    for batch in batches:
        engine.feed(batch)
        engine.now(ES)
    took = time.perf_counter() - started
    return took, engine.summary()


def vectorised(frames: list[pd.DataFrame]) -> tuple[float, pd.DataFrame]:
    engine = DeltaEngine(window="60s", max_bars=1, max_trades=1)
    started = time.perf_counter()
    for frame in frames:
        engine.feed(frame)
        engine.cumulative_delta  # noqa: B018 (the read a display makes)
    took = time.perf_counter() - started
    return took, engine.summary()


def study(rows: list[dict]) -> tuple[float, pd.DataFrame]:
    s = DeltaStudy("lee_ready", 60.0)
    s.contract = {"contract_id": ES}
    started = time.perf_counter()
    for row in rows:
        if s.feed([row]):
            s.update_json()
    took = time.perf_counter() - started
    return took, s.engine.summary()


def best(repeat: int, jobs: dict[str, Callable[[], tuple[float, pd.DataFrame]]]) -> dict:
    """Per job, its shortest time over `repeat` interleaved rounds and its summary."""
    out: dict[str, tuple[float, pd.DataFrame]] = {}
    for _ in range(repeat):
        for name, job in jobs.items():
            took, result = job()
            if name not in out or took < out[name][0]:
                out[name] = (took, result)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--vectorised-calls", type=int, default=300, help="calls timed on the vectorised path"
    )
    args = parser.parse_args()
    rows = rows_of(args.ticks)
    print(f"machine: {machine()}")
    print(f"{args.ticks:,} simulated ES ticks; best of {args.repeat} runs; µs per call")
    print(
        f"{'ticks/call':>10} {'per-tick µs':>12} {'ticks/s':>12} {'vectorised µs':>14} "
        f"{'ticks/s':>10} {'ratio':>7}  goal"
    )
    for size in SIZES:
        batches = [rows[i : i + size] for i in range(0, len(rows), size)]
        few = batches[: args.vectorised_calls]  # its cost per call does not depend on how many
        frames = [ticks_to_frame(b) for b in few]
        pd.testing.assert_frame_equal(per_tick(few)[1], vectorised(frames)[1])  # same numbers
        runs = best(
            args.repeat,
            {"rows": lambda b=batches: per_tick(b), "frames": lambda f=frames: vectorised(f)},
        )
        (fast, _), (slow, _) = runs["rows"], runs["frames"]
        fast_us, slow_us = fast / len(batches) * 1e6, slow / len(frames) * 1e6
        goal = "" if size > 10 else ("met" if fast_us <= GOAL_US else "not met") + " (50 µs)"
        print(
            f"{size:>10,} {fast_us:>12.1f} {size * 1e6 / fast_us:>12,.0f} {slow_us:>14.1f} "
            f"{size * 1e6 / slow_us:>10,.0f} {slow_us / fast_us:>6.0f}x  {goal}"
        )
    took, _ = best(args.repeat, {"study": lambda: study(rows)})["study"]
    rate = len(rows) / took
    met = "met" if rate >= GOAL_RATE else "not met"
    print(
        f"ibstream delta's study, one tick a call (feed + JSON update): "
        f"{took / len(rows) * 1e6:.1f} µs a tick, {rate:,.0f} ticks/s ({met}: {GOAL_RATE:,}/s)"
    )


if __name__ == "__main__":
    main()
