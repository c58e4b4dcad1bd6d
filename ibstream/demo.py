"""`ibstream demo`: simulator → ib_insync → server → WebSocket → live delta, in one command.

Every tick travels the path a live TWS user's does: the gateway simulator speaks the TWS API
socket protocol, the server reads it through ib_insync, and this demo is a WebSocket client.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from typing import TYPE_CHECKING, TextIO

import orjson

from ibstream.client import AsyncClient, ErrorEvent, Gap, Info
from ibstream.gateway import GatewaySimulator
from ibstream.model import iso_timestamp, price_decimals
from ibstream.server.run import start_server
from ibstream.server.settings import ServerSettings

if TYPE_CHECKING:
    from ibstream.analytics import TradeClassifier

_ARROW = {"buy": "BUY ", "sell": "SELL", "neutral": "----"}


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

    classifier, totals = TradeClassifier(), Counter()
    async with GatewaySimulator(port=0, seed=seed, rate=rate) as gateway:
        settings = ServerSettings(
            port=0, ib_port=gateway.port, client_id=random.randint(100, 10_000)
        )
        async with await start_server(settings) as server:
            out.write(f"gateway simulator on 127.0.0.1:{gateway.port}, server on {server.url}\n")
            async with AsyncClient(server.url, on_event=lambda e: _on_event(e, out)) as client:
                async with client.stream(contract, ("bid_ask", "last")) as stream:
                    info = stream.contract
                    name = info.get("local_symbol") or info.get("symbol") or contract
                    out.write(
                        f"streaming {name} ({info.get('contract_id')}) bid_ask + last "
                        f"for {seconds:g} s over WebSocket\n"
                    )
                    places = price_decimals(info.get("min_tick"))
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(seconds):  # the demo's duration
                            async for tick in stream:
                                _on_tick(tick, classifier, totals, out, quiet, places)
    summary = DeltaSummary(
        totals["trades"], totals["buy"], totals["sell"], totals["neutral"]
    ).to_dict()
    _print_summary(summary, out, as_json)
    return summary


def _on_event(event: object, out: TextIO) -> None:
    """Server infos, gaps and errors, one line each, as they come."""
    if isinstance(event, Info | Gap):
        out.write(f"[info] {event.message}\n")
    elif isinstance(event, ErrorEvent):
        out.write(f"[error] {event.error.message}\n")


def _on_tick(
    data: dict,
    classifier: TradeClassifier,
    totals: Counter,
    out: TextIO,
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

    def px(value: float) -> str:
        return "-" if value != value else f"{value:.{places}f}"  # NaN: no quote yet

    out.write(
        f"{iso_timestamp(data['recv_ns'])[11:23]}  {_ARROW[side]} {size:>6g} @ {px(trade['price']):>10}"
        f"   bid {px(trade['bid']):>10}  ask {px(trade['ask']):>10}"
        f"   delta {totals['buy'] - totals['sell']:>+7g}\n"
    )


def _print_summary(summary: dict, out: TextIO, as_json: bool) -> None:
    out.write(
        "\n--- delta summary ---\n"
        f"total trades : {summary['total_trades']}\n"
        f"buy volume   : {summary['buy_volume']}\n"
        f"sell volume  : {summary['sell_volume']}\n"
        f"net delta    : {summary['net_delta']:+}\n"
        f"buy %        : {summary['buy_pct']:.2f}\n"
    )
    if as_json:
        out.write(orjson.dumps(summary).decode() + "\n")
    out.flush()
