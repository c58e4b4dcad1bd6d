"""Ground truth for history tests: an ib_insync client subscribed tick by tick records every
trade, quote and midpoint the simulator sends live, with IB's own one-second time (ib_insync
replaces it with its receive time in its tick objects, so the wrapper calls are tapped)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from ib_insync import IB, Contract

HOST = "127.0.0.1"
ES_ID = 637533641
ES = Contract(conId=ES_ID, exchange="CME")


class GroundTruth:
    """Rows per kind ("TRADES", "BID_ASK", "MIDPOINT") as (IB second, fields...)."""

    def __init__(self, ib: IB) -> None:
        self.ib = ib
        self.rows: dict[str, list[tuple]] = defaultdict(list)
        self.first_second = 0
        w = ib.wrapper
        last, quote, midpoint = w.tickByTickAllLast, w.tickByTickBidAsk, w.tickByTickMidPoint

        def on_last(req_id, kind, t, price, size, attrib, exchange, conditions) -> None:
            self.rows["TRADES"].append((t, price, size, exchange, conditions))
            last(req_id, kind, t, price, size, attrib, exchange, conditions)

        def on_quote(req_id, t, bid, ask, bid_size, ask_size, attrib) -> None:
            self.rows["BID_ASK"].append((t, bid, ask, bid_size, ask_size))
            quote(req_id, t, bid, ask, bid_size, ask_size, attrib)

        def on_mid(req_id, t, mid) -> None:
            self.rows["MIDPOINT"].append((t, mid))
            midpoint(req_id, t, mid)

        w.tickByTickAllLast, w.tickByTickBidAsk, w.tickByTickMidPoint = on_last, on_quote, on_mid

    async def subscribe(
        self, contract: Contract = ES, kinds: tuple[str, ...] = ("AllLast", "BidAsk", "MidPoint")
    ) -> None:
        """Subscribe tick by tick; rows count from the next whole second."""
        for kind in kinds:
            self.ib.reqTickByTickData(contract, kind, 0, False)
        await self.ib.reqCurrentTimeAsync()  # the simulator has taken all three
        self.first_second = int(time.time()) + 1

    async def drained(self) -> None:
        """Return once every tick the simulator wrote before now has arrived (TCP keeps
        the order: the answer to a request comes after them)."""
        await self.ib.reqCurrentTimeAsync()

    async def until_second(self, second: int) -> None:
        """Wait until a trade of a later second arrived: every tick up to `second` is in."""
        loop = asyncio.get_running_loop()
        while not (self.rows["TRADES"] and self.rows["TRADES"][-1][0] > second):
            future = loop.create_future()
            handler = lambda *_, f=future: f.done() or f.set_result(None)  # noqa: E731
            self.ib.pendingTickersEvent += handler
            try:
                await asyncio.wait_for(future, 5)
            finally:
                self.ib.pendingTickersEvent -= handler

    def window(self, kind: str, start: int, end: int) -> list[tuple]:
        """Rows with start <= IB second < end."""
        return [r for r in self.rows[kind] if start <= r[0] < end]


def rows_of(kind: str, ticks: list) -> list[tuple]:
    """ib_insync's historical ticks as ground-truth rows."""
    out = []
    for t in ticks:
        second = int(t.time.timestamp())
        if kind == "TRADES":
            out.append((second, t.price, t.size, t.exchange, t.specialConditions))
        elif kind == "BID_ASK":
            out.append((second, t.priceBid, t.priceAsk, t.sizeBid, t.sizeAsk))
        else:
            out.append((second, t.price))
    return out
