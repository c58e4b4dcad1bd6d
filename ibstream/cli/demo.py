"""`ibstream demo`: simulator → ib_insync → server → WebSocket → live delta, in one command.

Every tick travels the path a live TWS user's does: the gateway simulator speaks the TWS API
socket protocol, the server reads it through ib_insync, and this demo is a WebSocket client.

With `--json`, stdout carries JSON lines only, one object per line from the first, each with
a `type` (logging goes to stderr):

    {"type": "start", "gateway": "127.0.0.1:PORT", "server": "http://127.0.0.1:PORT"}
    {"type": "stream", "contract": {...}, "tick_types": ["bid_ask", "last"], "seconds": 20.0}
    {"type": "trade", "timestamp": "...Z", "side": "buy", "size": 1.0, "price": 5900.25,
     "bid": 5900.0, "ask": 5900.25, "delta": 3.0}        (one per trade, not with --quiet;
                                                          bid / ask null before a quote)
    {"type": "info" | "gap" | "error", "message": "..."}  (as the server reports them; an
                                                          error that ends the demo is the
                                                          last line, with its `code`)
    {"type": "summary", "total_trades": 80, "buy_volume": 95.0, "sell_volume": 88.0,
     "net_delta": 7.0, "buy_pct": 51.91}                  (the last line)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
from collections import Counter
from typing import TYPE_CHECKING, TextIO

from ibstream.cli.lines import json_line, trade_fields
from ibstream.errors import StreamError
from ibstream.model import price_decimals

if TYPE_CHECKING:
    from ibstream.analytics import TradeClassifier

_ARROW = {"buy": "BUY ", "sell": "SELL", "neutral": "----"}
TICK_TYPES = ("bid_ask", "last")


HELP = "simulator + server + live delta summary in the terminal"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `demo` subcommand's options (the console script calls `main(args)`)."""
    p.add_argument("--seconds", type=float, default=20.0, help="how long to stream")
    p.add_argument("--contract", default="ES", help="contract spec or conId")
    p.add_argument("--seed", type=int, default=7, help="random seed of the simulator")
    p.add_argument("--json", action="store_true", help="JSON lines only on stdout, one per line")
    p.add_argument("--quiet", action="store_true", help="no line per trade, only the summary")


def main(args: argparse.Namespace) -> int:
    """Run the demo from the console script's options; returns the exit code."""
    if args.seconds <= 0:
        sys.stderr.write("ibstream demo: --seconds must be positive\n")
        return 2
    try:
        asyncio.run(
            run_demo(
                sys.stdout,
                seconds=args.seconds,
                contract=args.contract,
                seed=args.seed,
                as_json=args.json,
                quiet=args.quiet,
            )
        )
    except KeyboardInterrupt:
        return 130
    except StreamError as exc:  # e.g. CONTRACT_NOT_FOUND: what to fix, not a traceback
        if args.json:
            DemoOutput(sys.stdout, True).emit(
                "error", exc.message, code=str(exc.code), message=exc.message
            )
        sys.stderr.write(f"ibstream demo: {exc.message}\n")
        return 1
    except BrokenPipeError:  # `ibstream demo | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


class DemoOutput:
    """The demo's lines: text for a person, or (`as_json`) one JSON object per line."""

    def __init__(self, out: TextIO, as_json: bool):
        self.out, self.as_json = out, as_json

    def emit(self, kind: str, text: str, **fields: object) -> None:
        if self.as_json:
            self.out.write(json_line(kind, **fields) + "\n")
            self.out.flush()  # a reader acts on each line as it comes
        else:
            self.out.write(text + "\n")


async def run_demo(
    out: TextIO,
    *,
    seconds: float = 20.0,
    contract: str = "ES",
    seed: int = 7,
    rate: float = 40.0,
    as_json: bool = False,
    quiet: bool = False,
) -> dict:
    """Run the whole pipeline for `seconds` and return the summary that was printed.

    Trades are classified as they arrive by the incremental `TradeClassifier` with the
    default method (`ibstream.analytics.DEFAULT_METHOD`).
    """
    from ibstream.analytics import TradeClassifier
    from ibstream.analytics.delta import DeltaSummary
    from ibstream.client import AsyncClient
    from ibstream.gateway import GatewaySimulator
    from ibstream.server.run import start_server
    from ibstream.server.settings import ServerSettings

    show = DemoOutput(out, as_json)
    classifier, totals = TradeClassifier(), Counter()
    async with GatewaySimulator(port=0, seed=seed, rate=rate) as gateway:
        settings = ServerSettings(
            port=0, ib_port=gateway.port, client_id=random.randint(100, 10_000)
        )
        async with await start_server(settings) as server:
            where = f"127.0.0.1:{gateway.port}"
            show.emit(
                "start",
                f"gateway simulator on {where}, server on {server.url}",
                gateway=where,
                server=server.url,
            )
            async with AsyncClient(server.url, on_event=lambda e: _on_event(e, show)) as client:
                async with client.stream(contract, TICK_TYPES) as stream:
                    info = stream.contract
                    name = info.get("local_symbol") or info.get("symbol") or contract
                    show.emit(
                        "stream",
                        f"streaming {name} ({info.get('contract_id')}) bid_ask + last "
                        f"for {seconds:g} s over WebSocket",
                        contract=info,
                        tick_types=list(TICK_TYPES),
                        seconds=seconds,
                    )
                    places = price_decimals(info.get("min_tick"))
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(seconds):  # the demo's duration
                            async for tick in stream:
                                _on_tick(tick, classifier, totals, show, quiet, places)
    summary = DeltaSummary(
        totals["trades"], totals["buy"], totals["sell"], totals["neutral"]
    ).to_dict()
    show.emit("summary", _summary_text(summary), **summary)
    out.flush()
    return summary


def _on_event(event: object, show: DemoOutput) -> None:
    """Server infos, gaps and errors (the client's events), one line each, as they come."""
    kind = getattr(event, "kind", None)
    if kind in ("info", "gap"):
        show.emit(kind, f"[{kind}] {event.message}", message=event.message)
    elif kind == "error":
        error = event.error
        show.emit("error", f"[error] {error.message}", message=error.message, code=str(error.code))


def _on_tick(
    data: dict,
    classifier: TradeClassifier,
    totals: Counter,
    show: DemoOutput,
    quiet: bool,
    places: int,
) -> None:
    trades = classifier.update(data)
    if trades.empty:  # a quote: it only moves the classifier's prevailing bid / ask
        return
    trade = trades.iloc[0]
    side, size = str(trade["side"]), float(trade["size"])
    totals["trades"] += 1
    totals[side] += size
    if quiet:
        return
    price, bid, ask = (float(trade[k]) for k in ("price", "bid", "ask"))
    delta = totals["buy"] - totals["sell"]

    def px(value: float) -> str:
        return "-" if value != value else f"{value:.{places}f}"  # NaN: no quote yet

    fields = trade_fields(data["recv_ns"], side, size, price, bid, ask, delta)
    show.emit(
        "trade",
        f"{fields['timestamp'][11:23]}  {_ARROW[side]} {size:>6g} @ {px(price):>10}"
        f"   bid {px(bid):>10}  ask {px(ask):>10}   delta {delta:>+7g}",
        **fields,
    )


def _summary_text(summary: dict) -> str:
    return (
        "\n--- delta summary ---\n"
        f"total trades : {summary['total_trades']}\n"
        f"buy volume   : {summary['buy_volume']}\n"
        f"sell volume  : {summary['sell_volume']}\n"
        f"net delta    : {summary['net_delta']:+}\n"
        f"buy %        : {summary['buy_pct']:.2f}"
    )
