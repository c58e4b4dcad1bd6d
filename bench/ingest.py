"""Ticks per second from wire bytes into the tick frame, beside `pd.DataFrame(list_of_dicts)`
measured in the same run.

    python -m bench.ingest [--ticks 200000] [--repeat 5] [--batch 100]

The payloads are what the server sends: tick messages encoded by its own encoder
(`tick_prefix` + `encode_tick_tail`), 70 % ES quotes (bid_ask) and 30 % trades (last), as in
the live streams. Every path starts from the same list of bytes and ends with a frame; each
figure is the best of `--repeat` rounds. Only the ratios mean anything on a shared machine.

The client paths run what `collect` runs (a `Subscription` feeding a `Collection`), once on
one message per tick and once on batched `ticks` messages of `--batch` ticks of both streams
(the same ticks in the same order, as a server sends them with `batch_ms`).
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from ibstream.client.collect import Collection
from ibstream.client.events import EventLog
from ibstream.client.frames import FrameBuilder, frame_from_payloads, ticks_to_frame
from ibstream.client.subscription import Subscription
from ibstream.model import Tick, TickType
from ibstream.protocol.encode import (
    EncodedTick,
    batch_message,
    encode_tick,
    item_prefix,
    tick_prefix,
)

ES = 637533641
STREAM_IDS = {
    TickType.BID_ASK: f"{ES}_bid_ask_1764117667101_9f2c1a7e",
    TickType.LAST: f"{ES}_last_1764117667101_1a2b3c4d",
}


def payloads(n: int, seed: int = 1) -> list[bytes]:
    """`n` tick messages as the server encodes them: a random walk of ES quotes and trades."""
    return [tick_prefix(STREAM_IDS[t]) + entry.tail for t, entry in encoded(n, seed)]


def batched_payloads(n: int, batch: int, seed: int = 1) -> list[bytes]:
    """The same ticks as `payloads`, in `ticks` messages of up to `batch` ticks of both
    streams in arrival order, as a server sends them with `batch_ms`."""
    prefixes = {t: item_prefix(sid) for t, sid in STREAM_IDS.items()}
    ticks = encoded(n, seed)
    out = []
    for start in range(0, n, batch):
        chunk = ticks[start : start + batch]
        spans: dict[str, list[int]] = {}
        for tick_type, entry in chunk:
            spans.setdefault(STREAM_IDS[tick_type], [entry.sequence, 0])[1] = entry.sequence
        items = [prefixes[t] + entry.item for t, entry in chunk]
        out.append(batch_message(items, spans, False).payload)  # type: ignore[arg-type]
    return out


def encoded(n: int, seed: int) -> list[tuple[TickType, EncodedTick]]:
    rng = np.random.default_rng(seed)
    recv_ns = 1764117667312004117 + np.cumsum(rng.integers(1_000, 2_000_000, n))
    is_trade = rng.random(n) < 0.3
    bid = 5893.5 + 0.25 * np.cumsum(rng.integers(-1, 2, n))
    sizes = rng.integers(1, 50, (n, 2)).tolist()
    sequences = {False: 0, True: 0}
    out = []
    for i in range(n):
        trade = bool(is_trade[i])
        sequences[trade] += 1
        if trade:
            price = float(bid[i] + 0.25 * (i % 2))
            tick = Tick(
                ES, TickType.LAST, int(recv_ns[i]), price=price, size=float(sizes[i][0] % 10 + 1)
            )
            tick.exchange = "CME"
            out.append((TickType.LAST, encode_tick(tick, sequences[trade])))
        else:
            tick = Tick(
                ES,
                TickType.BID_ASK,
                int(recv_ns[i]),
                bid_price=float(bid[i]),
                bid_size=float(sizes[i][0]),
                ask_price=float(bid[i]) + 0.25,
                ask_size=float(sizes[i][1]),
            )
            out.append((TickType.BID_ASK, encode_tick(tick, sequences[trade])))
    return out


def baseline(wire: list[bytes]) -> pd.DataFrame:
    return pd.DataFrame([orjson.loads(p)["data"] for p in wire])


def via_ticks_to_frame(wire: list[bytes]) -> pd.DataFrame:
    return ticks_to_frame([orjson.loads(p)["data"] for p in wire])


def via_builder(wire: list[bytes]) -> pd.DataFrame:
    """The live path: one message at a time into a FrameBuilder, one frame at the end."""
    builder = FrameBuilder()
    loads, append = orjson.loads, builder.append
    for payload in wire:
        append(loads(payload)["data"])
    return builder.to_frame()


def via_collect(wire: list[bytes]) -> pd.DataFrame:
    """What `collect` does with each message: parse, the subscription's bookkeeping (dedup,
    gaps, positions), into the collection's builder; per-tick or batched messages alike."""
    collection = Collection(None, 1)
    sub = Subscription(ES, ["bid_ask", "last"], collection, _LOG)
    sub.bind(
        {"streams": [{"stream_id": sid, "tick_type": t.value} for t, sid in STREAM_IDS.items()]}
    )
    loads, on_message = orjson.loads, sub.on_message
    for payload in wire:
        on_message(loads(payload))
    return collection.frame()


_LOG = EventLog("bench", [])


def via_payloads_one_thread(wire: list[bytes]) -> pd.DataFrame:
    """frame_from_payloads with pyarrow held to one thread: how its parse scales with cores."""
    cores = pa.cpu_count()
    pa.set_cpu_count(1)
    try:
        return frame_from_payloads(wire)
    finally:
        pa.set_cpu_count(cores)


PATHS: dict[str, Callable[[list[bytes]], pd.DataFrame]] = {
    "pd.DataFrame(list of dicts)  [baseline]": baseline,
    "ticks_to_frame": via_ticks_to_frame,
    "FrameBuilder.append per tick": via_builder,
    "frame_from_payloads": frame_from_payloads,
    "frame_from_payloads, 1 pyarrow thread": via_payloads_one_thread,
    "collect path, one message per tick": via_collect,
}
BATCHED_PATHS: dict[str, Callable[[list[bytes]], pd.DataFrame]] = {
    "collect path, batched ticks messages": via_collect,
}


def best_rates(wire: list[bytes], batched: list[bytes], repeat: int) -> dict[str, float]:
    """Ticks/s of each path, best of `repeat` rounds; every round runs every path, so load
    from other processes falls on all paths alike."""
    runs = [(name, path, wire) for name, path in PATHS.items()]
    runs += [(name, path, batched) for name, path in BATCHED_PATHS.items()]
    best = {name: float("inf") for name, _, _ in runs}
    for _ in range(repeat):
        for name, path, messages in runs:
            gc.collect()
            t0 = time.perf_counter()
            frame = path(messages)
            best[name] = min(best[name], time.perf_counter() - t0)
            if len(frame) != len(wire):
                raise RuntimeError(f"{name} returned {len(frame)} rows for {len(wire)}")
    return {name: len(wire) / seconds for name, seconds in best.items()}


def check_same_frames(wire: list[bytes], batched: list[bytes]) -> None:
    """Speed counts only if exact: every path of ours must build the identical frame, the
    batched one too (row for row: batches keep arrival order)."""
    expected = via_ticks_to_frame(wire)
    for path in (via_builder, frame_from_payloads, via_collect):
        pd.testing.assert_frame_equal(path(wire), expected)
    pd.testing.assert_frame_equal(via_collect(batched), expected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=200_000, help="tick messages per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs per path; the best counts")
    parser.add_argument("--batch", type=int, default=100, help="ticks per batched message")
    args = parser.parse_args()
    wire = payloads(args.ticks)
    batched = batched_payloads(args.ticks, args.batch)
    size = sum(map(len, wire)) / len(wire)
    print(
        f"{len(wire):,} tick messages, {size:.0f} bytes each on average, best of {args.repeat}, "
        f"{pa.cpu_count()} pyarrow threads; batched: {len(batched):,} ticks messages"
    )
    check_same_frames(wire, batched)
    rates = best_rates(wire, batched, args.repeat)
    base = next(iter(rates.values()))
    print(f"\n{'path':<40} | {'ticks/s':>11} | vs baseline")
    for name, rate in rates.items():
        print(f"{name:<40} | {rate:>11,.0f} | {rate / base:>10.2f}x")


if __name__ == "__main__":
    main()
