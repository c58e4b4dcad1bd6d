"""Simulator -> ib_insync -> hub -> WebSocket -> classifier, checked against the simulator's
recorded true aggressor of every trade.

Quotes and trades travel as separate IB subscriptions; the classification is only right if
every quote reaches the client before the trade that follows it. The simulator prints some
trades strictly inside a wider spread: the quote rule calls those neutral by design.
"""

from __future__ import annotations

from ibstream.classify import QuoteRuleClassifier, Side
from ibstream.gateway.market import BUY
from tests.conftest import WAIT

ES = 637533641
N_TRADES = 150


async def test_every_trade_classified_as_its_true_aggressor(server, gateway, ws_client):
    client = await ws_client(server)
    await client.subscribe(ES, ["bid_ask", "last"])
    classifier, received = QuoteRuleClassifier(), []
    while len(received) < N_TRADES:
        msg = await client.recv(WAIT)
        if msg["type"] != "tick":
            continue
        data = msg["data"]
        if data["tick_type"] == "bid_ask":
            classifier.on_quote(data["bid_price"], data["ask_price"])
        else:
            received.append(
                (data["price"], data["size"], classifier.on_trade(data["price"], data["size"]))
            )
    await client.request("unsubscribe_all")

    truth = list(gateway.market(ES).trades)
    start = next(
        i
        for i in range(len(truth))
        if [(t.price, t.size) for t in truth[i : i + N_TRADES]] == [(p, s) for p, s, _ in received]
    )  # the received trades are one contiguous run of what the market printed
    expected = [
        Side.NEUTRAL if t.inside else Side.BUY if t.side == BUY else Side.SELL
        for t in truth[start : start + N_TRADES]
    ]
    assert [side for _, _, side in received] == expected
    assert {Side.BUY, Side.SELL} <= set(expected)  # both kinds of pressure were exercised
