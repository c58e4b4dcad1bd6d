"""`ibstream delta CONTRACT`: the live delta study against a running ibstream server.

Ticks (quotes and trades) come through the research client over WebSocket or SSE and are
classified and summed by the incremental `DeltaEngine` on its per-tick path (microseconds a
tick), in the batches they arrive in. The terminal shows a line per trade and, every second,
the rolling summary; with `--json`, stdout carries only JSON lines, each with a `type`: a
`trade` line per trade as `ibstream demo --json` writes them (see `ibstream.cli.lines`), an
`update` after each batch of ticks that brought trades, and a `summary` line last:

    {"type": "trade", "timestamp": "...Z", "side": "sell", "size": 3.0, "price": 5900.0,
     "bid": 5900.0, "ask": 5900.25, "delta": 41.0}
    {"type": "update", "study": "delta", "contract_id": 637533641, "timestamp": "...Z",
     "window_seconds": 60, "data": {"current_delta": -3, "cumulative_delta": 41,
     "period_stats": {...}}}
    {"type": "summary", "total_trades": 80, "buy_volume": 95.0, "sell_volume": 88.0,
     "net_delta": 7.0, "buy_pct": 51.91}

`timestamp` is the receive time of the (update's last) trade, `current_delta` that trade's
signed size, `cumulative_delta` (a trade's `delta`) the sum since the study started,
`period_stats` the rolling window up to that trade. `--output` gets the same lines. Notes
(reconnects, gaps, server infos) go to stderr in JSON mode; an error that ends the study is
the last line instead of the summary (`{"type": "error", "code": ..., "message": ...}`).
Exit codes: 0 at the end (`--seconds`, Ctrl-C, SIGTERM, the server ending the stream), 1 on
a server or contract error, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from ibstream.cli.lines import json_line

if TYPE_CHECKING:
    from ibstream.cli.delta_view import StudyTrade
    from ibstream.client import AsyncStream

SUMMARY_EVERY = 1.0  # seconds between rolling-summary lines in the table
MAX_PENDING = 100_000  # ticks waiting for the study before it gives up as too slow
HELP = "live buy/sell delta of one contract from a running server"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `delta` subcommand's options (the console script calls `main(args)`)."""
    p.add_argument("contract", help="conId or spec: ES, MNQ, AAPL, EUR.USD, SYMBOL:SECTYPE...")
    p.add_argument(
        "--server", help="server URL (default: $IBSTREAM_URL, else http://127.0.0.1:8001)"
    )
    p.add_argument(
        "--transport", choices=("websocket", "sse"), default="websocket", help="stream transport"
    )
    p.add_argument("--window", type=_positive, default=60.0, help="rolling window, seconds")
    p.add_argument("--method", default=None, help="classification method (default: lee_ready)")
    p.add_argument("--json", action="store_true", help="only JSON lines on stdout")
    p.add_argument(
        "--output", metavar="FILE.jsonl", help="also write the JSON lines here (default: no file)"
    )
    p.add_argument(
        "--seconds", type=_positive, default=None, help="stop after N seconds (default: at Ctrl-C)"
    )
    p.add_argument(
        "--token", default=None, help="bearer token, if the server wants one (default: "
        "$IBSTREAM_TOKEN)",
    )  # fmt: skip


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def main(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the study until its end; returns the exit code."""
    out, err = out or sys.stdout, err or sys.stderr
    from ibstream.analytics import resolve_method
    from ibstream.server.launch import default_url

    args.server = args.server or default_url()
    try:
        args.method = resolve_method(args.method)
    except ValueError as exc:
        err.write(f"ibstream delta: {exc}\n")
        return 2
    try:
        sink = open(args.output, "w", buffering=1) if args.output else None
    except OSError as exc:
        err.write(f"ibstream delta: cannot write {args.output}: {exc.strerror}\n")
        return 2
    if not getattr(args, "verbose", 0):  # the study prints the client's events itself
        logging.getLogger("ibstream.client").setLevel(logging.ERROR)
    try:
        return asyncio.run(_until_signal(args, out, err, sink))
    except BrokenPipeError:  # `ibstream delta ES | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if sink is not None:
            sink.close()


async def _until_signal(args: argparse.Namespace, out: TextIO, err: TextIO, sink: object) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return await run_delta(args, out, err, stop, sink)


class Pending:
    """Ticks handed over by the client's callback until the study takes them (bounded)."""

    def __init__(self, limit: int, wake: Callable[[], None]):
        self.ticks: list[dict] = []
        self.limit = limit
        self.overflowed = False
        self._wake = wake

    def put(self, tick: dict) -> None:
        if len(self.ticks) >= self.limit:
            self.overflowed = True
        else:
            self.ticks.append(tick)
        self._wake()

    def take(self) -> list[dict]:
        ticks, self.ticks = self.ticks, []
        return ticks


async def run_delta(
    args: argparse.Namespace,
    out: TextIO,
    err: TextIO,
    stop: asyncio.Event,
    sink: TextIO | None = None,
) -> int:
    """Subscribe, then feed each batch of arrived ticks to the study and render it, until
    `stop` is set, `args.seconds` pass or the stream ends; returns the exit code."""
    from ibstream.client import AsyncClient
    from ibstream.errors import StreamError

    run = _Run(args, out, err, stop, sink)
    client = AsyncClient(
        args.server, args.transport, args.token, connect_timeout=5.0, on_event=run.on_event
    )
    try:
        stream = await client.stream(args.contract, ("bid_ask", "last"), on_tick=run.pending.put)
        run.study.contract = stream.contract
        run.note(run.study.describe(args.transport))
        return await run.loop(stream)
    except StreamError as exc:
        err.write(f"ibstream delta: {exc.code}: {exc.message}\n")
        run.ended = run.emit("error", code=str(exc.code), message=exc.message)
        return 1
    finally:
        run.stop_waiter.cancel()
        await client.close()
        if not run.ended:
            run.finish()


class _Run:
    """One run of the command: the study, its outputs and what wakes its loop."""

    def __init__(
        self,
        args: argparse.Namespace,
        out: TextIO,
        err: TextIO,
        stop: asyncio.Event,
        sink: TextIO | None,
    ):
        self.args, self.out, self.sink, self.stop = args, out, sink, stop
        self.notes = err if args.json else out
        from ibstream.cli import delta_view as view  # pandas: only once the study runs

        self.view = view
        self.study = view.DeltaStudy(args.method, args.window)
        self.wake = asyncio.Event()
        self.pending = Pending(MAX_PENDING, self.wake.set)
        self.stop_waiter = asyncio.ensure_future(stop.wait())
        self.stop_waiter.add_done_callback(lambda _: self.wake.set())
        self.ended = False  # the last line is written

    def note(self, line: str) -> None:
        self.notes.write(line + "\n")
        self.notes.flush()

    def on_event(self, event: object) -> None:
        line = self.view.event_line(event)
        if line:
            self.note(line)
        self.wake.set()

    def show(self, trades: list[StudyTrade]) -> None:
        """Render a batch's trades: table rows, or JSON trade lines and an update (and
        those into --output)."""
        if self.args.json or self.sink is not None:
            self.json_lines([*self.study.trade_json(trades), self.study.update_json()])
        if not self.args.json:
            self.out.write(self.view.trade_lines(trades, self.study) + "\n")
        self.out.flush()

    def json_lines(self, lines: list[str]) -> None:
        text = "".join(line + "\n" for line in lines)
        if self.args.json:
            self.out.write(text)
            self.out.flush()
        if self.sink is not None:
            self.sink.write(text)

    def emit(self, kind: str, **fields: object) -> bool:
        """A last JSON line (in JSON mode or into --output); whether one was written."""
        if self.args.json or self.sink is not None:
            self.json_lines([json_line(kind, **fields)])
            return True
        return False

    def finish(self) -> None:
        """The final summary: a JSON line, or text after the table."""
        if self.args.json or self.sink is not None:
            self.json_lines([self.study.summary_json()])
        if not self.args.json and self.study.trade_count:
            self.out.write(self.view.final_summary(self.study) + "\n")
            self.out.flush()

    async def loop(self, stream: AsyncStream) -> int:
        loop = asyncio.get_running_loop()
        seconds = self.args.seconds
        deadline = math.inf if seconds is None else loop.time() + seconds
        next_summary, unsummarised = loop.time() + SUMMARY_EVERY, False
        if not self.args.json:
            self.out.write(self.view.trade_lines(None, self.study) + "\n")  # the header
        while True:
            self.wake.clear()
            trades = self.study.feed(self.pending.take())
            if trades:
                self.show(trades)
                unsummarised = True
            if self.stop.is_set():  # Ctrl-C or SIGTERM, after what had arrived
                return 0
            if self.pending.overflowed:
                self.note(f"ibstream delta: fell {MAX_PENDING} ticks behind the stream; stopped")
                return 1
            if not stream.active:
                if stream.error is not None:
                    raise stream.error
                self.note("the server ended the stream")
                return 0
            now = loop.time()
            if now >= next_summary:
                next_summary = now + SUMMARY_EVERY
                if unsummarised and not self.args.json:
                    self.out.write(self.view.summary_line(self.study) + "\n")
                    self.out.flush()
                unsummarised = False
            if now >= deadline:
                return 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), min(next_summary, deadline) - now)
