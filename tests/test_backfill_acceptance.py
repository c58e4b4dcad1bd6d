"""Issue 13's acceptance run, in one run: a recording of ES survives a `kill -9` with 10 s
down and three IB outages of 10 s each, and afterwards the store holds every trade (and
quote) one for one against an independent client, every gap `filled`, and the cumulative
delta over the whole window has no hole.

The independent ib_insync client stays connected to the simulator throughout (the drop hook
keeps its connection) and records every tick the simulator sends (`GroundTruth`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

import ibstream.store
from ibstream.analytics import cumulative_delta
from tests.client_fixtures import ServerProcess
from tests.history_fixtures import GroundTruth
from tests.test_backfill import (
    OPTIONS,
    check_against_truth,
    ib_outages,
    killed_for,
    recorded_market,
    stored_stream,
    stream_keys,
)

DOWN = 10  # seconds the server is dead, and each IB outage
OUTAGES = 3


def tick_rule(prices: list[float], sizes: list[float]) -> list[float]:
    """Signed volume by the tick test: above the last different earlier price a buy, below it
    a sell, neutral (0) while there is none."""
    out, last_price, side = [], None, 0
    for price, size in zip(prices, sizes, strict=True):
        if last_price is not None and price != last_price:
            side = 1 if price > last_price else -1
        last_price = price
        out.append(side * size)
    return out


def check_delta_against_truth(store: Path, truth: GroundTruth) -> int:
    """`Store.trades(method="tick")`: its cumulative delta has no NaN, and over the seconds
    the recording spans its signed volumes are the tick test's on the ground truth's trades,
    trade by trade in order; returns the number of trades compared."""
    trades = ibstream.store.open(store).trades(method="tick")
    delta = cumulative_delta(trades)
    assert len(delta) and not delta.isna().any()
    stored = stored_stream(store, "all_last")  # the same trades, in the same (arrival) order
    assert trades["price"].tolist() == stored["price"].to_pylist()
    seconds = [k[0] for k in stream_keys(stored, [])]
    prices = trades["price"].tolist()
    # from the first whole second on, once the store has seen a price change (before it the
    # tick test has no earlier different price there, where the ground truth has one)
    moved = next(i for i in range(1, len(prices)) if prices[i] != prices[i - 1])
    first, last = max(seconds[0] + 1, seconds[moved] + 1), seconds[-1] - 1
    window = np.array([first <= s <= last for s in seconds])
    signs = {"buy": 1.0, "sell": -1.0, "neutral": 0.0}
    mine = [signs[side] * size for side, size in zip(trades["side"], trades["size"], strict=True)]
    mine = [m for m, inside in zip(mine, window, strict=True) if inside]
    rows = truth.rows["TRADES"]
    theirs = [
        signed
        for row, signed in zip(
            rows, tick_rule([r[1] for r in rows], [r[2] for r in rows]), strict=True
        )
        if first <= row[0] <= last
    ]
    if mine != theirs:  # say where: one for one, in order, none missing, doubled or reordered
        at = next(i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b)
        row = int(np.flatnonzero(window)[at])
        sec = seconds[row]
        got = [
            (s, p, z, src)
            for s, p, z, src in zip(
                seconds,
                stored["price"].to_pylist(),
                stored["size"].to_pylist(),
                stored["source"].to_pylist(),
                strict=True,
            )
            if abs(s - sec) <= 1
        ]
        want = [r[:3] for r in rows if abs(r[0] - sec) <= 1]
        raise AssertionError(f"trade {at} (IB second {sec}) differs:\nstored {got}\ntruth {want}")
    inside = delta[window]
    assert inside.iloc[-1] - inside.iloc[0] == sum(theirs[1:])  # exact: whole sizes
    return len(mine)


@pytest.mark.timeout(150)
async def test_kill_and_three_ib_outages_leave_every_trade_once_and_delta_whole(tmp_path: Path):
    store = tmp_path / "store"
    options = ["--record", str(store), *OPTIONS]
    async with recorded_market(31) as (gateway, truth, truth_id):
        server = ServerProcess(gateway.port)
        try:
            await server.start(*options)
            await truth.until_second(int(time.time()) + 2)
            await killed_for(server, truth, options, DOWN)  # kill -9: nobody records for 10 s
            await ib_outages(gateway, server, truth_id, OUTAGES, DOWN)
            await truth.until_second(int(time.time()) + 1)
            assert await server.terminate() == 0
        finally:
            await server.kill()
    rows = ibstream.store.open(store).gaps()
    assert sorted(rows["reason"]) == ["ib_disconnected"] * 6 + ["server_restarted"] * 2, rows
    assert (rows["status"] == "filled").all(), rows
    assert gateway.pacing_violations == 0
    check_against_truth(store, truth, "server_restarted", 1)
    check_against_truth(store, truth, "ib_disconnected", OUTAGES)
    assert check_delta_against_truth(store, truth) > 1000
