"""Tick store speed: recording writes and reads, each figure beside a baseline measured in
the same run (only the ratios mean much on a shared machine).

    python -m bench.store [--write-ticks 1000000] [--day-ticks 5000000] [--repeat 3]
                          [--day DIR]

(a) Write: ticks as the hub hands them to the recorder (`Tick` objects and their sequences;
    70 % ES quotes, 30 % trades), kept as the recorder keeps them (`StreamColumns`, one
    `add` per tick on the hub's path, before the timing), into Parquet (zstd) parts with
    `parts.build_column_parts` +
    `parts.write_part`, pyarrow held to one thread (one core). Baselines: the same ticks as
    JSON lines (orjson of each tick's `data`, the server's own message body, written to a
    file) and the floor, `parts.write_table` of the tables already built (Parquet's share,
    no columns to build). Goal >= 1 M ticks/s.
(b) Read: a day of ES made here (`--day-ticks` over the 23 hours CME trades, one part per
    stream and hour, written as the recorder writes them) into a tick frame with
    `ibstream.store.open(DIR).ticks()`, and its two halves on their own: the reader's scan (a
    table a stream's run of parts, only the columns its footers say hold values, text as
    dictionaries), then `store.frame.frame_from_tables`. Baselines: the plain scan alone
    (`ticks_dataset().to_table()`, no frame) and pandas' own `read_parquet` of the directory
    (a frame, unsorted, not the tick schema). Goal >= 10 M ticks/s. Each round of `ticks()`
    is printed with its kernel time and the machine's huge-page faults and compaction stalls
    (`bench.kernel`): fresh memory is what makes the figure swing.
(c) Recording cost, the 1-client rate with `--record` over without (goal >= 0.9):
    `bench.record` (`make bench-store` runs it after this).
(d) Replay at `--speed max` to one client over the live 1-client rate (goal >= 0.8): in
    `bench.replay` (`make bench-replay`), beside `ibstream replay` (see `replay_rate`).

Each figure is the best of `--repeat` rounds; every round runs every path of its step, so
load from other processes falls on all paths alike.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import ibstream.store
from bench import kernel
from ibstream.model import ContractInfo, Tick, TickType
from ibstream.store import catalog, layout
from ibstream.store.columns import StreamColumns
from ibstream.store.frame import frame_from_tables
from ibstream.store.parts import build_column_parts, build_parts, write_part, write_table

ES = ContractInfo(
    contract_id=637533641, symbol="ES", sec_type="FUT", exchange="CME", currency="USD",
    local_symbol="ESZ6", min_tick=0.25, description="E-mini S&P 500",
    last_trade_date="20261218", multiplier="50",
)  # fmt: skip
DAY_NS = 1_796_601_600 * 10**9  # 2026-12-07 00:00 UTC
HOUR_NS = 3_600 * 10**9
CME_HOURS = [h for h in range(24) if h != 22]  # 23 hours: the daily halt is 22:00-23:00 UTC
SERVER_ID = "bench"
FRAME_COLUMNS = [
    "time", "sequence", "price", "size", "bid_price", "bid_size", "ask_price", "ask_size",
    "mid_price", "exchange", "conditions", "ib_time", "contract_id", "tick_type",
]  # fmt: skip


def say(line: str) -> None:
    print(line, flush=True)


def hub_ticks(n: int, start_ns: int, span_ns: int, seed: int) -> dict[str, list[Tick]]:
    """`n` ticks of ES in `span_ns` from `start_ns`, as the source makes them (strictly
    increasing receive stamps, IB's second), split by stream: 70 % quotes, 30 % trades."""
    rng = np.random.default_rng(seed)
    recv = start_ns + np.sort(rng.integers(0, span_ns, n))
    recv = (np.maximum.accumulate(recv - np.arange(n)) + np.arange(n)).tolist()
    trade = (rng.random(n) < 0.3).tolist()
    bid = (5900.0 + 0.25 * np.cumsum(rng.integers(-1, 2, n))).tolist()
    sizes = rng.integers(1, 60, (n, 2)).astype(float).tolist()
    out: dict[str, list[Tick]] = {"bid_ask": [], "last": []}
    quotes, trades = out["bid_ask"].append, out["last"].append
    for i in range(n):
        stamp, price, (a, b) = recv[i], bid[i], sizes[i]
        if trade[i]:
            trades(Tick(ES.contract_id, TickType.LAST, stamp, price=price, size=a % 9 + 1,
                        exchange="CME", ib_time=stamp // 10**9))  # fmt: skip
        else:
            quotes(Tick(ES.contract_id, TickType.BID_ASK, stamp, bid_price=price, bid_size=a,
                        ask_price=price + 0.25, ask_size=b, ib_time=stamp // 10**9))  # fmt: skip
    return out


def kept(streams: dict[str, list[Tick]], first: dict[str, int]) -> dict[str, tuple]:
    """Each stream's ticks as the recorder keeps them until a flush (typed columns, one
    `add` per tick on the hub's path: not timed here), with its first sequence; `first`
    holds each stream's next sequence (updated)."""
    out = {}
    for tick_type, ticks in streams.items():
        columns = StreamColumns(tick_type)
        for tick in ticks:
            columns.add(tick)
        out[tick_type] = (columns, first.get(tick_type, 1))
        first[tick_type] = out[tick_type][1] + len(ticks)
    return out


def record(root: layout.StoreRoot, streams: dict[str, tuple]) -> int:
    """What the recorder does at a flush: each stream's kept ticks into parts, each part
    written aside and renamed."""
    written = 0
    for tick_type, (columns, first) in streams.items():
        for part in build_column_parts(ES, tick_type, columns, first, SERVER_ID):
            write_part(root, part, SERVER_ID, ES.to_dict())
            written += part.table.num_rows
    return written


def best(paths: dict[str, Callable[[], int]], repeat: int) -> dict[str, float]:
    """Ticks/s of each path (it returns how many ticks it handled), best of `repeat`. The
    order turns by one each round: the first path of a round runs on memory the kernel has
    to hand out afresh (a frame is half a GB) and measured up to 2x slower for it."""
    rates = dict.fromkeys(paths, 0.0)
    names = list(paths)
    for turn in range(repeat):
        for name in names[turn % len(names) :] + names[: turn % len(names)]:
            path = paths[name]
            gc.collect()
            t0 = time.perf_counter()
            ticks = path()
            rates[name] = max(rates[name], ticks / (time.perf_counter() - t0))
    return rates


def show(rates: dict[str, float], baselines: list[str], goal: str, goal_rate: float) -> None:
    say(f"{'path':<58} | {'ticks/s':>12} | " + " | ".join(f"vs {b[:14]:<14}" for b in baselines))
    for name, rate in rates.items():
        ratios = " | ".join(f"{rate / rates[b]:>17.2f}x" for b in baselines)
        say(f"{name:<58} | {rate:>12,.0f} | {ratios}")
    ours = next(r for n, r in rates.items() if n not in baselines)
    say(f"goal: {goal}: {'met' if ours >= goal_rate else 'not met'} ({ours / 1e6:.2f} M/s)\n")


def write_step(n: int, repeat: int, scratch: Path) -> None:
    streams = hub_ticks(n, DAY_NS + 14 * HOUR_NS, HOUR_NS // 2, seed=1)
    held = kept(streams, {})
    rounds = iter(range(1_000_000))
    finished = [
        part.table
        for tick_type, ticks in streams.items()
        for part in build_parts(ES, tick_type, ticks, range(1, len(ticks) + 1), SERVER_ID)
    ]

    def ours() -> int:
        return record(layout.open_root(scratch / f"w{next(rounds)}"), held)

    def json_lines() -> int:
        path = scratch / f"j{next(rounds)}.jsonl"
        with open(path, "wb") as out:
            for ticks in streams.values():
                out.write(b"".join(orjson.dumps(t.data(i)) + b"\n" for i, t in enumerate(ticks)))
        return n

    def parquet_only() -> int:
        root = layout.open_root(scratch)
        for table in finished:
            write_table(root, root.path(f"p{next(rounds)}.parquet"), table)
        return n

    say(f"(a) write: {n:,} ticks ({len(streams['bid_ask']):,} quotes, "
        f"{len(streams['last']):,} trades) from the hub into zstd Parquet, 1 pyarrow thread")  # fmt: skip
    paths = {
        "build_column_parts + write_part (the recorder's flush)": ours,
        "JSON lines (orjson of each tick's data)  [baseline]": json_lines,
        "parts.write_table of the built table  [floor]": parquet_only,
    }
    cores, io = pa.cpu_count(), pa.io_thread_count()
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    try:
        rates = best(paths, repeat)
    finally:
        pa.set_cpu_count(cores)
        pa.set_io_thread_count(io)
    show(rates, list(paths)[1:], "write >= 1 M ticks/s on one core", 1e6)


def make_day(root: layout.StoreRoot, n: int) -> None:
    """A day of ES written hour by hour as the recorder writes it (one part per stream and
    hour), so memory holds one hour's ticks at a time."""
    per_hour, sequences = n // len(CME_HOURS), {}
    for seed, hour in enumerate(CME_HOURS):
        streams = hub_ticks(per_hour, DAY_NS + hour * HOUR_NS, HOUR_NS, seed)
        record(root, kept(streams, sequences))


def read_step(n: int, repeat: int, day: Path) -> None:
    root = layout.open_root(day)
    if not (day / layout.TICKS).is_dir():
        t0 = time.perf_counter()
        make_day(root, n)
        say(f"made the day in {time.perf_counter() - t0:.0f} s: {day}")
    files = layout.ticks_dataset(root).files
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    size = sum(os.path.getsize(f) for f in files)
    say(f"(b) read: a day of ES, {rows:,} ticks in {len(files)} parts ({size / 1e6:.0f} MB), "
        f"into a tick frame, {pa.cpu_count()} pyarrow threads")  # fmt: skip

    phases: list[tuple[float, ...]] = []

    store = ibstream.store.open(day)

    rounds: list[str] = []

    def store_ticks() -> int:
        frame, cost = kernel.measured(store.ticks)
        if not frame.index.is_monotonic_increasing:
            raise RuntimeError("the frame is not in arrival order")
        rounds.append(kernel.describe(cost, len(frame)))
        return len(frame)

    def ours() -> int:
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        scan = store._read(store.validator.usable(catalog.list_parts(root)), None, None)
        r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        frame = frame_from_tables(scan)
        r2, t2 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        phases.append((t2 - t0, t1 - t0, *_cpu(r0, r1), t2 - t1, *_cpu(r1, r2)))
        if not frame.index.is_monotonic_increasing:
            raise RuntimeError("the frame is not in arrival order")
        return len(frame)

    def scan_only() -> int:
        return layout.ticks_dataset(root).to_table(columns=FRAME_COLUMNS).num_rows

    def pandas_read() -> int:
        return len(pd.read_parquet(day / layout.TICKS, columns=FRAME_COLUMNS))

    paths = {
        "ibstream.store.open(DIR).ticks() -> tick frame": store_ticks,
        "reader scan + frame_from_tables -> tick frame": ours,
        "scan alone, ticks_dataset().to_table()  [baseline]": scan_only,
        "pd.read_parquet(DIR/ticks), unsorted  [baseline]": pandas_read,
    }
    show(best(paths, repeat), list(paths)[2:], "read >= 10 M ticks/s", 10e6)
    _, scan, scan_user, scan_sys, frame, frame_user, frame_sys = min(phases)
    say(f"where the time goes (best round, seconds wall / user / sys): scan {scan:.3f} / "
        f"{scan_user:.3f} / {scan_sys:.3f}, frame_from_tables {frame:.3f} / {frame_user:.3f} / "
        f"{frame_sys:.3f} (sys: the kernel handing out the frame's fresh pages)")  # fmt: skip
    say("ticks() round by round (huge-page faults and compaction stalls: the machine's, from "
        "/proc/vmstat; cold huge pages cost up to 10x warm ones):\n  " + "\n  ".join(rounds) + "\n")  # fmt: skip


def _cpu(before: resource.struct_rusage, after: resource.struct_rusage) -> tuple[float, float]:
    return after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


def recording_cost() -> None:
    """Hook (c): the server's 1-client rate with the recorder on over off is `bench.record`
    (servers, simulator and clients in their own processes)."""
    say("(c) recording cost: `python -m bench.record` (`make bench-store` runs it next)")


def replay_rate() -> None:
    """Hook (d): `ibstream replay --speed max` to one client over the live 1-client rate is
    measured where replay lives (`bench.replay`)."""
    say("(d) replay rate: `python -m bench.replay` (`make bench-replay`)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-ticks", type=int, default=1_000_000, help="ticks per write")
    parser.add_argument("--day-ticks", type=int, default=5_000_000, help="ticks in the day")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best counts")
    parser.add_argument("--day", type=Path, help="keep (or reuse) the day here (default: temp)")
    args = parser.parse_args()
    say(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; Python "
        f"{platform.python_version()}, pyarrow {pa.__version__}, pandas {pd.__version__}\n")  # fmt: skip
    scratch = Path(tempfile.mkdtemp(prefix="ibstream-bench-store-"))
    try:
        write_step(args.write_ticks, args.repeat, scratch)
        shutil.rmtree(scratch)
        scratch.mkdir()
        read_step(args.day_ticks, args.repeat, args.day or scratch / "day")
        recording_cost()
        replay_rate()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
