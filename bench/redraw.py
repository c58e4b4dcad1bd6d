"""Cost of the dashboard's redraws at 1,000 and 5,000 ticks/s in, beside a naive full
redraw of all data, in the same run.

    python -m bench.redraw [--seconds 20] [--rates 1000 5000] [--window 5min] [--bar 5s]

A feeder thread stands in for the client's loop thread: it hands simulated ES quotes and
trades (the gateway simulator's `Market`, stamped as they go) one by one to the dashboard's
`Inbox` at the offered rate. On this process's asyncio loop (as a kernel's) the library's
`Ticker` steps at most 10 times a second:

- dashboard: what `Dashboard.refresh` does: take the batch, feed the `LiveModel`, assign the
  bounded plot arrays to the real bqplot figures;
- naive: keep every tick; each step re-classify all of them, recompute bars and cumulative
  delta, and assign every quote, trade and bar since the start to the same figures;
- feed only: take the batch and drop it (the feeder's own cost, the floor of the others).

Widget messages go to a comm that JSON-encodes them and counts the bytes, as a kernel
would before sending. Figures: per step (ms: mean, p95, max), points and kilobytes sent
per step, CPU of the whole process in % of one core (`time.process_time` over wall time,
the feeder included) and the loop's lag (how late a 10 ms sleep of another task wakes:
what a cell would wait). On a shared machine only the ratios mean much.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import comm
import numpy as np
import pandas as pd

from ibstream.gateway.contracts import BUILTIN_BY_CON_ID
from ibstream.gateway.market import Market, Quote

ES = 637533641


class CountingComm(comm.base_comm.BaseComm):
    """Encodes each widget message as a kernel would and counts what would be sent."""

    bytes_sent = 0

    def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):  # noqa: ANN001
        size = len(json.dumps({"data": data, "metadata": metadata}, default=str))
        size += sum(memoryview(b).nbytes for b in buffers or ())
        CountingComm.bytes_sent += size


comm.create_comm = CountingComm  # before any widget exists


def market_rows(n: int, seed: int = 7) -> list[dict]:
    """`n` ES ticks as wire rows; `recv_ns` is stamped when fed."""
    rows = []
    for i, e in enumerate(Market(BUILTIN_BY_CON_ID[ES], seed=seed, bursts=False).step(n, 0.0)):
        row = {"contract_id": ES, "sequence": i + 1}
        if isinstance(e, Quote):
            row |= {"tick_type": "bid_ask", "bid_price": e.bid, "ask_price": e.ask}
            row |= {"bid_size": e.bid_size, "ask_size": e.ask_size}
        else:
            row |= {"tick_type": "last", "price": e.price, "size": e.size, "exchange": e.exchange}
        rows.append(row)
    return rows


class Feeder(threading.Thread):
    """Puts `rows` into `put` at `rate` per second, each stamped at its hand-over."""

    def __init__(self, rows: list[dict], rate: float, put: Callable[[dict], None]) -> None:
        super().__init__(name="bench-feeder", daemon=True)
        self.rows, self.rate, self.put = rows, rate, put
        self.stop = threading.Event()
        self.fed = 0

    def run(self) -> None:
        start = time.perf_counter()
        while not self.stop.wait(0.002) and self.fed < len(self.rows):
            due = min(len(self.rows), int((time.perf_counter() - start) * self.rate))
            for row in self.rows[self.fed : due]:
                row["recv_ns"] = time.time_ns()
                self.put(row)
            self.fed = max(self.fed, due)


def dashboard_step(inbox, window: str, bar: str) -> Callable[[], int]:  # noqa: ANN001
    from ibstream.client.frames import ticks_to_frame
    from ibstream.widgets.figures import Figures
    from ibstream.widgets.model import LiveModel

    model, figures = LiveModel(window, bar), Figures("USD")

    def step() -> int:
        rows = inbox.take()
        if rows:
            model.feed(ticks_to_frame(rows))
            figures.draw(plot := model.plot())
            return (
                len(plot.quote_time)
                + sum(len(t) for t, _, _ in plot.trades.values())
                + len(plot.delta_time)
                + 3 * len(plot.bar_time)
            )
        return 0

    return step


def naive_step(inbox, window: str, bar: str) -> Callable[[], int]:  # noqa: ANN001
    from ibstream.analytics import bars, classify, cumulative_delta
    from ibstream.client.frames import ticks_to_frame
    from ibstream.widgets.figures import Figures
    from ibstream.widgets.model import PlotData

    figures, frames = Figures("USD"), []
    span = pd.Timedelta(window).value

    def step() -> int:
        rows = inbox.take()
        if not rows:
            return 0
        frames.append(ticks_to_frame(rows))
        ticks = pd.concat(frames)
        trades = classify(ticks)
        b, cum = bars(trades, bar), cumulative_delta(trades).to_numpy()
        quotes = ticks[ticks["tick_type"] == "bid_ask"]
        t = trades.index.as_unit("ns").asi8.view("M8[ns]")
        side = trades["side"].to_numpy()
        end = int(ticks.index.as_unit("ns").asi8[-1])
        buy, sell = b["buy_volume"].to_numpy(), b["sell_volume"].to_numpy()
        plot = PlotData(
            start=np.datetime64(end - span, "ns"),
            end=np.datetime64(end, "ns"),
            quote_time=quotes.index.as_unit("ns").asi8.view("M8[ns]"),
            bid=quotes["bid_price"].to_numpy(),
            ask=quotes["ask_price"].to_numpy(),
            trades={
                s: (
                    t[side == s],
                    trades["price"].to_numpy()[side == s],
                    trades["size"].to_numpy()[side == s],
                )
                for s in ("buy", "sell", "neutral")
            },  # fmt: skip
            delta_time=t,
            delta=cum,
            bar_time=b.index.as_unit("ns").asi8.view("M8[ns]"),
            buy=buy,
            sell=-sell,
            buy_pct=100 * buy / (buy + sell),
            delta_since=np.datetime64(int(ticks.index.as_unit("ns").asi8[0]), "ns"),
        )
        figures.draw(plot)
        return len(quotes) + 2 * len(trades) + 3 * len(b)

    return step


def feed_only_step(inbox, window: str, bar: str) -> Callable[[], int]:  # noqa: ANN001
    return lambda: len(inbox.take()) * 0


@dataclass
class Result:
    mode: str
    rate: int
    steps: int
    ms: np.ndarray
    points: float
    kilobytes: float
    cpu: float
    lag_p95: float


async def measure(mode: str, rows: list[dict], rate: int, seconds: float, args) -> Result:  # noqa: ANN001
    from ibstream.widgets.schedule import Inbox, Ticker

    inbox = Inbox()
    make = {"dashboard": dashboard_step, "naive": naive_step, "feed only": feed_only_step}[mode]
    step = make(inbox, args.window, args.bar)
    took: list[float] = []
    points: list[int] = []

    def timed() -> None:
        started = time.perf_counter()
        points.append(step())
        took.append(time.perf_counter() - started)

    lags: list[float] = []
    stop = asyncio.Event()

    async def probe() -> None:  # another cell's view of the loop
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            asked = loop.time()
            await asyncio.sleep(0.01)
            lags.append(loop.time() - asked - 0.01)

    feeder = Feeder(rows[: int(rate * seconds)], rate, inbox.put)
    ticker = Ticker(timed)
    CountingComm.bytes_sent = 0
    wall, cpu = time.perf_counter(), time.process_time()
    feeder.start()
    ticker.start()
    prober = asyncio.create_task(probe())
    await asyncio.sleep(seconds)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    ticker.stop()
    stop.set()
    await asyncio.gather(ticker.wait_stopped(), prober)
    feeder.stop.set()
    feeder.join()
    if ticker.failures:
        raise RuntimeError(f"{mode}: {ticker.failures} step(s) failed (logged above)")
    drawn = [p for p in points if p] or [0]
    return Result(
        mode, rate, len(took), np.array(took) * 1e3, float(np.mean(drawn)),
        CountingComm.bytes_sent / max(1, len(drawn)) / 1e3, 100 * cpu / wall,
        float(np.percentile(lags, 95)) * 1e3 if lags else float("nan"),
    )  # fmt: skip


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per mode and rate")
    parser.add_argument("--rates", type=int, nargs="+", default=[1_000, 5_000])
    parser.add_argument("--window", default="5min")
    parser.add_argument("--bar", default="5s")
    args = parser.parse_args()
    rows = market_rows(int(max(args.rates) * args.seconds) + 1)
    print(f"machine: {machine()}")
    print(f"{args.seconds:g} s per run, window {args.window}, bars {args.bar}, <= 10 steps/s")
    head = f"{'mode':<10} {'ticks/s':>7} {'steps':>5} {'ms mean':>8} {'p95':>7} {'max':>7}"
    print(f"{head} {'points':>8} {'KB':>8} {'CPU %':>6} {'lag p95 ms':>10}")
    for rate in args.rates:
        results = {}
        for mode in ("feed only", "dashboard", "naive"):
            r = asyncio.run(measure(mode, [dict(x) for x in rows], rate, args.seconds, args))
            results[mode] = r
            print(
                f"{r.mode:<10} {r.rate:>7} {r.steps:>5} {r.ms.mean():>8.2f} "
                f"{np.percentile(r.ms, 95):>7.2f} {r.ms.max():>7.1f} {r.points:>8.0f} "
                f"{r.kilobytes:>8.1f} {r.cpu:>6.1f} {r.lag_p95:>10.1f}",
                flush=True,
            )
        d, n = results["dashboard"], results["naive"]
        print(
            f"  naive / dashboard at {rate}/s: {n.ms.mean() / d.ms.mean():.1f}x ms per step, "
            f"{n.cpu / d.cpu:.1f}x CPU, {n.kilobytes / max(d.kilobytes, 1e-9):.1f}x bytes"
        )


if __name__ == "__main__":
    main()
