"""Prices as markets make them: zero and negative prices (calendar spreads, CL in April
2020) are quotes and trades like any other; only an empty side (size 0, as IB reports it,
or no price) is missing. Through the whole chain: simulator -> ib_insync -> server ->
client -> classify, and in delta, bars, footprint, order-flow imbalance and the dashboard."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ibstream.analytics import (
    DeltaEngine,
    bars,
    classify,
    footprint,
    order_flow_imbalance,
    summary,
)
from ibstream.client import AsyncClient
from ibstream.client.frames import ticks_to_frame
from ibstream.gateway.contracts import BUILTIN_BY_CON_ID, CL_SPREAD
from ibstream.gateway.market import BUY
from ibstream.widgets.figures import Figures
from ibstream.widgets.model import LiveModel
from tests.data import tick_frame
from tests.test_classify import q, sides, t
from tests.test_end_to_end import truth_of
from tests.test_widgets import market_rows


def spread_rows(n: int, seed: int = 1) -> list[dict]:
    """`n` events of the simulated calendar spread as wire rows, 1 ms apart."""
    return market_rows(n, seed=seed, contract=CL_SPREAD)


def test_the_simulated_spread_walks_through_zero_into_negative_prices():
    assert BUILTIN_BY_CON_ID[CL_SPREAD.con_id] is CL_SPREAD
    frame = ticks_to_frame(spread_rows(600))
    quotes = frame[frame["tick_type"] == "bid_ask"]
    assert (quotes["bid_price"] < 0).any() and (quotes["bid_price"] == 0).any()
    assert (quotes["bid_price"] > 0).any()  # and back above zero


def test_zero_and_negative_quotes_decide_like_any_other():
    rows = [q(-0.05, -0.03), t(-0.03), t(-0.05), q(0.0, 0.02), t(0.0), t(0.02)]
    rows = [
        r | {"bid_size": 3.0, "ask_size": 4.0} if r["tick_type"] == "bid_ask" else r for r in rows
    ]
    for method in ("quote", "lee_ready", "emo", "clnv"):
        trades = classify(tick_frame(rows), method)
        assert trades["quote"].astype(str).tolist() == ["ok"] * 4, method
        assert sides(trades) == ["buy", "sell", "sell", "buy"], method
    empty = [q(0.0, -1.0) | {"bid_size": 0.0, "ask_size": 0.0}, t(5.0)]  # IB's empty sides
    assert classify(tick_frame(empty))["quote"].astype(str).tolist() == ["missing"]


def test_delta_bars_and_footprint_take_negative_prices():
    ticks = ticks_to_frame(spread_rows(2000))
    trades = classify(ticks)
    assert (trades["price"] < 0).any() and (trades["quote"] == "ok").mean() > 0.99
    b = bars(trades, "100ms")
    assert (b["low"] < 0).any() and b["vwap"].notna().all()
    assert np.allclose(b["volume"], b["buy_volume"] + b["sell_volume"] + b["neutral_volume"])
    cells = footprint(trades, "100ms", tick_size=0.01)
    assert (cells["price"] < 0).any()
    pd.testing.assert_series_equal(
        cells.groupby(level=0)["buy_volume"].sum(), b["buy_volume"], check_names=False
    )
    levels = np.round(cells["price"] / 0.01, 6)
    assert np.array_equal(levels, np.round(levels))  # on the grid, below zero too
    engine = DeltaEngine(bar_interval="100ms", tick_size=0.01)
    engine.feed(ticks)
    pd.testing.assert_frame_equal(engine.summary(), summary(trades))
    pd.testing.assert_frame_equal(engine.footprint(), cells)


def test_ofi_counts_an_emptied_side_as_no_change_not_a_spike():
    rows = [
        q(99.0, 101.0) | {"bid_size": 5.0, "ask_size": 7.0},
        q(0.0, 101.0) | {"bid_size": 0.0, "ask_size": 7.0},  # the bid side empties
        q(99.0, 101.0) | {"bid_size": 5.0, "ask_size": 7.0},  # and refills as it was
        q(-1.0, -0.5) | {"bid_size": 2.0, "ask_size": 3.0},  # negative prices: real quotes
    ]
    ofi = order_flow_imbalance(tick_frame(rows))["ofi"].tolist()
    assert np.isnan(ofi[0]) and ofi[1:3] == [0.0, 0.0]
    assert ofi[3] == -5.0 - 3.0  # bid down: -q_prev; ask down: -q_now


def test_the_dashboard_shows_prices_below_zero():
    model = LiveModel("1s", "100ms")
    model.feed(ticks_to_frame(spread_rows(1500)))
    plot = model.plot()
    figures = Figures("USD", min_tick=CL_SPREAD.min_tick)
    figures.draw(plot)
    scale = figures.price.axes[1].scale
    assert scale.min <= np.nanmin(plot.bid) < 0 and scale.max >= np.nanmax(plot.ask)
    assert np.isfinite(plot.bid).all()  # no quote side read as missing


async def test_a_negative_price_contract_through_the_whole_chain_is_classified_against_quotes(
    server, gateway
):
    async with AsyncClient(server.url) as client:
        ticks = await client.collect(
            CL_SPREAD.con_id, ("bid_ask", "last"), limit=400, progress=False
        )
    trades = classify(ticks)
    quotes = ticks[ticks["tick_type"] == "bid_ask"]
    assert (quotes["bid_price"] <= 0).any() and (trades["price"] <= 0).any()
    # every trade after the first quote is priced against a quote, none falls back to the
    # tick test for want of one; and the side is the simulator's true aggressor
    quoted = trades[trades["quote"] == "ok"]
    assert len(quoted) >= len(trades) - 1 and len(quoted) > 50
    truth = truth_of(gateway, CL_SPREAD.con_id, trades)
    kept = [not x.inside for x in truth]
    true_side = ["buy" if x.side == BUY else "sell" for x in truth]
    got = sides(trades)
    assert [s for s, k in zip(got, kept, strict=True) if k] == [
        s for s, k in zip(true_side, kept, strict=True) if k
    ]
