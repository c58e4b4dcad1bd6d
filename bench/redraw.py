"""Cost of the dashboard's redraws at 1,000 and 5,000 ticks/s in, beside a naive full
redraw of all data, in the same run.

    python -m bench.redraw [--seconds 20] [--rates 1000 5000] [--replay-minutes 10]

Live part: a feeder thread stands in for the client's loop thread and hands simulated ES
quotes and trades (the gateway simulator's `Market`, stamped as they go) one by one to the
dashboard's `Inbox` at the offered rate; on this process's asyncio loop (as a kernel's) the
library's `Ticker` steps at most 10 times a second:

- dashboard: what `Dashboard.refresh` does: feed the batch to the `LiveModel` and assign
  its bounded plot arrays to the real bqplot figures;
- + panels: the same with the profile and footprint panels on (`panels=` all six: the
  model keeps the window's volume per bar and price level too);
- naive: keep every tick; each step re-classify all of them, recompute bars and cumulative
  delta, and assign every quote, trade and bar since the start to the same figures;
- feed only: drop the batch (the feeder's own cost, the floor of the others).

Widget messages go to a comm that JSON-encodes them and counts the bytes, as a kernel
would before sending. Columns: ms per step (mean; at the end, the last 10 % of steps; p95;
max), points and kilobytes sent per redraw, CPU of the whole process in % of one core
(`time.process_time` over wall time, feeder included) and the loop's lag (how late another
task's 10 ms sleep wakes: what a cell waits). Replay part: --replay-minutes of ticks at
1,000/s stepped every 100 ms of their time as fast as possible: the dashboard's step cost
per minute without and with the two panels (their ratio, and the panels' cells and levels
held: bounded by the window), and the naive step's at a few points. On a shared machine only the ratios
(measured in the same run) mean much.
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

import comm
import numpy as np
import pandas as pd

from ibstream.analytics import bars, classify, cumulative_delta
from ibstream.client.frames import ticks_to_frame
from ibstream.gateway.contracts import BUILTIN_BY_CON_ID
from ibstream.gateway.market import Market, Quote
from ibstream.widgets.figures import Figures
from ibstream.widgets.model import LiveModel, PlotData
from ibstream.widgets.panels import DEFAULT_PANELS, LEVEL_PANELS, PANELS
from ibstream.widgets.schedule import Inbox, Ticker

ES = 637533641
ES_TICK = BUILTIN_BY_CON_ID[ES].min_tick
NS = np.dtype("M8[ns]")
REPLAY_NS = 1_800_000_000_000_000_000  # replayed ticks' first stamp


class CountingComm(comm.base_comm.BaseComm):
    """Encodes each widget message as a kernel would and counts what would be sent."""

    bytes_sent = 0

    def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):  # noqa: ANN001
        size = len(json.dumps({"data": data, "metadata": metadata}, default=str))
        CountingComm.bytes_sent += size + sum(memoryview(b).nbytes for b in buffers or ())


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


class Dashboard:
    """The dashboard's path: `LiveModel` + figures; returns the points sent."""

    def __init__(self, window: str, bar: str, panels: tuple[str, ...] = DEFAULT_PANELS) -> None:
        levels = bool(LEVEL_PANELS.intersection(panels))
        self.model = LiveModel(window, bar, levels=levels, tick_size=ES_TICK)
        self.figures = Figures("USD", min_tick=ES_TICK, panels=panels)

    def __call__(self, rows: list[dict]) -> int:
        if not rows:
            return 0
        self.model.feed(rows)  # as `Dashboard._ingest`: wire rows, the engine's per-tick path
        self.figures.draw(plot := self.model.plot())
        lines = [plot.quote_time, plot.delta_time, *(t for t, _, _ in plot.trades.values())]
        points = sum(map(len, lines)) + 3 * len(plot.bar_time)
        if plot.profile is not None and plot.footprint is not None:
            points += 3 * len(plot.profile.price) + int((plot.footprint.trades > 0).sum())
        return points

    def held(self) -> str:
        """What the level book holds: bars, cells and levels (bounded by the window)."""
        book = self.model.levels
        if book is None:
            return ""
        cells = sum(len(c.level) for c in book.bars)
        return f"{len(book.bars)} bars, {cells} cells, {len(book.totals)} levels"


class Naive:
    """Everything since the start, re-classified and re-plotted at every step."""

    def __init__(self, window: str, bar: str) -> None:
        self.figures, self.frames, self.bar = Figures("USD"), [], bar
        self.span = pd.Timedelta(window).value

    def add(self, rows: list[dict]) -> None:
        self.frames.append(ticks_to_frame(rows))

    def __call__(self, rows: list[dict]) -> int:
        if not rows:
            return 0
        self.add(rows)
        ticks = pd.concat(self.frames)
        trades = classify(ticks)
        b = bars(trades, self.bar)
        quotes = ticks[ticks["tick_type"] == "bid_ask"]
        time_, side = trades.index.as_unit("ns").asi8.view(NS), trades["side"].to_numpy()
        price, size = trades["price"].to_numpy(), trades["size"].to_numpy()
        stamps = ticks.index.as_unit("ns").asi8
        buy, sell = b["buy_volume"].to_numpy(), b["sell_volume"].to_numpy()
        self.figures.draw(
            PlotData(
                start=np.datetime64(int(stamps[-1]) - self.span, "ns"),
                end=np.datetime64(int(stamps[-1]), "ns"),
                quote_time=quotes.index.as_unit("ns").asi8.view(NS),
                bid=quotes["bid_price"].to_numpy(),
                ask=quotes["ask_price"].to_numpy(),
                trades={
                    s: (time_[side == s], price[side == s], size[side == s])
                    for s in ("buy", "sell", "neutral")
                },  # fmt: skip
                delta_time=time_,
                delta=cumulative_delta(trades).to_numpy(),
                bar_time=b.index.as_unit("ns").asi8.view(NS),
                buy=buy,
                sell=-sell,
                buy_pct=100 * buy / (buy + sell),
                delta_since=np.datetime64(int(stamps[0]), "ns"),
            )
        )
        return len(quotes) + 2 * len(trades) + 3 * len(b)


def discard(rows: list[dict]) -> int:
    return 0


VIEWS: dict[str, Callable] = {
    "feed only": lambda window, bar: discard,
    "dashboard": Dashboard,
    "+ panels": lambda window, bar: Dashboard(window, bar, PANELS),
    "naive": Naive,
}


def feed(rows: list[dict], rate: float, put: Callable[[dict], None], stop: threading.Event) -> None:
    """Hand `rows` to `put` at `rate` per second, each stamped at its hand-over."""
    start, fed = time.perf_counter(), 0
    while not stop.wait(0.002) and fed < len(rows):
        due = min(len(rows), int((time.perf_counter() - start) * rate))
        for row in rows[fed:due]:
            row["recv_ns"] = time.time_ns()
            put(row)
        fed = max(fed, due)


async def live(mode: str, rows: list[dict], rate: int, args: argparse.Namespace) -> dict:
    warm = VIEWS[mode](args.window, args.bar)  # first calls import and cache: not measured
    for at in (0, 100):
        warm([dict(r, recv_ns=REPLAY_NS + at + i) for i, r in enumerate(rows[at : at + 100])])
    inbox, view = Inbox(), VIEWS[mode](args.window, args.bar)
    took, points, lags = [], [], []

    def step() -> None:
        started = time.perf_counter()
        points.append(view(inbox.take()))
        took.append(time.perf_counter() - started)

    async def probe() -> None:  # another cell's view of the loop
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            asked = loop.time()
            await asyncio.sleep(0.01)
            lags.append(loop.time() - asked - 0.01)

    stop, ticker = threading.Event(), Ticker(step)
    feeder = threading.Thread(target=feed, args=(rows, rate, inbox.put, stop), daemon=True)
    CountingComm.bytes_sent = 0
    wall, cpu = time.perf_counter(), time.process_time()
    feeder.start()
    ticker.start()
    prober = asyncio.create_task(probe())
    await asyncio.sleep(args.seconds)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stop.set()
    ticker.stop()
    await asyncio.gather(ticker.wait_stopped(), prober)
    feeder.join()
    if ticker.failures:
        raise RuntimeError(f"{mode}: {ticker.failures} step(s) failed (logged above)")
    ms, drawn = np.array(took) * 1e3, max(1, sum(1 for p in points if p))
    return {
        "ms": ms.mean(), "end": ms[-max(1, len(ms) // 10) :].mean(),
        "p95": np.percentile(ms, 95), "max": ms.max(), "steps": len(ms),
        "points": sum(points) / drawn, "kb": CountingComm.bytes_sent / drawn / 1e3,
        "cpu": 100 * cpu / wall, "lag": np.percentile(lags, 95) * 1e3,
    }  # fmt: skip


def replay(rows: list[dict], minutes: int, args: argparse.Namespace) -> None:
    """Ticks at 1,000/s stepped every 100 ms of their time, as fast as the machine goes;
    the naive view is timed once at minutes 1, 5, 10 and the last (it only keeps the
    ticks in between)."""
    dashboard, naive = Dashboard(args.window, args.bar), Naive(args.window, args.bar)
    panels = Dashboard(args.window, args.bar, PANELS)
    costs: list[float] = []
    kilobytes: list[float] = []
    panel_costs: list[float] = []
    print(
        f"\nreplay: {minutes} min at 1000 ticks/s, a step per 100 ticks: ms (KB) per step;"
        " + panels: ms per step with profile and footprint, its ratio, what its levels hold"
    )
    for k in range(minutes * 600):
        first = k * 100
        batch = [
            dict(rows[n % len(rows)], sequence=n + 1, recv_ns=REPLAY_NS + n * 10**6)
            for n in range(first, first + 100)
        ]
        started, sent = time.perf_counter(), CountingComm.bytes_sent
        dashboard(batch)
        costs.append(time.perf_counter() - started)
        kilobytes.append((CountingComm.bytes_sent - sent) / 1e3)
        started = time.perf_counter()
        panels([dict(row) for row in batch])
        panel_costs.append(time.perf_counter() - started)
        minute = (k + 1) // 600 if (k + 1) % 600 == 0 else 0
        cost, sent = np.mean(costs[-600:]) * 1e3, np.mean(kilobytes[-600:])
        with_panels = np.mean(panel_costs[-600:]) * 1e3
        line = (
            f"  minute {minute:>3}: dashboard {cost:6.2f} ({sent:5.1f})   + panels"
            f" {with_panels:6.2f} ({with_panels / cost:.2f}x; {panels.held()})"
        )
        if minute in (1, 5, 10, minutes):
            started = time.perf_counter()
            naive(batch)  # every tick so far, classified and drawn again
            slow = (time.perf_counter() - started) * 1e3
            print(f"{line}   naive {slow:8.1f} ({slow / cost:.0f}x)", flush=True)
        else:
            naive.add(batch)
            if minute:
                print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per run (0: no live part)")
    parser.add_argument("--rates", type=int, nargs="+", default=[1_000, 5_000])
    parser.add_argument("--window", default="5min")
    parser.add_argument("--bar", default="5s")
    parser.add_argument("--replay-minutes", type=int, default=10, help="0: no replay")
    args = parser.parse_args()
    rows = market_rows(max(int(max(args.rates) * args.seconds), 100_000))
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}")
    print(f"{args.seconds:g} s per run, window {args.window}, bars {args.bar}, <= 10 steps/s")
    print(f"{'mode':<10} {'ticks/s':>7} {'steps':>5} {'ms':>7} {'at end':>7} {'p95':>7} "
          f"{'max':>7} {'points':>7} {'KB':>7} {'CPU %':>6} {'lag p95':>7}")  # fmt: skip
    for rate in args.rates if args.seconds > 0 else ():
        got = {}
        for mode in VIEWS:
            r = got[mode] = asyncio.run(live(mode, [dict(x) for x in rows], rate, args))
            print(f"{mode:<10} {rate:>7} {r['steps']:>5} {r['ms']:>7.2f} {r['end']:>7.2f} "
                  f"{r['p95']:>7.2f} {r['max']:>7.1f} {r['points']:>7.0f} {r['kb']:>7.1f} "
                  f"{r['cpu']:>6.1f} {r['lag']:>7.1f}", flush=True)  # fmt: skip
        d, n, p = got["dashboard"], got["naive"], got["+ panels"]
        print(f"  naive / dashboard at {rate}/s: {n['ms'] / d['ms']:.1f}x ms per step "
              f"({n['end'] / d['end']:.1f}x at the end), {n['cpu'] / d['cpu']:.1f}x CPU, "
              f"{n['kb'] / d['kb']:.0f}x bytes")  # fmt: skip
        print(f"  + panels / dashboard at {rate}/s: {p['ms'] / d['ms']:.2f}x ms per step "
              f"({p['end'] / d['end']:.2f}x at the end; goal <= 2x), {p['cpu'] / d['cpu']:.2f}x "
              f"CPU, {p['kb'] / d['kb']:.2f}x bytes")  # fmt: skip
    if args.replay_minutes:
        replay(rows, args.replay_minutes, args)


if __name__ == "__main__":
    main()
