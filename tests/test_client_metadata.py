"""What the wire carries reaches the tick frame: trade conditions (odd lots, off-exchange
prints), IB's own tick time beside the receive time, and the contracts the frame holds
(`attrs["contracts"]`, surviving Parquet); `contracts()` gives the server's contract details;
`footprint` takes a contract's `min_tick` from that metadata when no tick size is given."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from ibstream.analytics import classify, footprint
from ibstream.client import AsyncClient
from ibstream.client.frames import ticks_to_frame
from ibstream.errors import ContractNotFound

ES, AAPL = 637533641, 265598


def parquet_round_trip(frame: pd.DataFrame) -> pd.DataFrame:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, engine="pyarrow")
    return pd.read_parquet(io.BytesIO(buffer.getvalue()), engine="pyarrow")


async def test_odd_lots_carry_their_conditions_and_every_tick_ibs_time(server):
    async with AsyncClient(server.url) as client:
        frame = await client.collect("AAPL", ["all_last", "last"], limit=400, progress=False)
    trades = frame[frame["tick_type"] == "all_last"]
    odd = trades[trades["conditions"] == "I"]
    assert len(odd) > 0 and (odd["size"] < 100).all()  # the simulator's odd lots
    assert frame.loc[frame["tick_type"] == "last", "conditions"].isna().all()  # Last omits them
    assert frame["ib_time"].notna().all()
    assert (frame["ib_time"] == frame["ib_time"].dt.floor("s")).all()  # IB's whole seconds
    assert (frame.index - frame["ib_time"]).abs().max() < pd.Timedelta(minutes=1)  # the tick's


async def test_the_frame_names_its_contracts_and_keeps_them_through_parquet(server):
    async with AsyncClient(server.url) as client:
        frame = await client.collect(["ES", "AAPL"], limit=300, progress=False)
        buffer = await client.buffer("ES", max_ticks=10)
    contracts = {c["contract_id"]: c for c in frame.attrs["contracts"]}
    assert set(contracts) == {ES, AAPL}
    assert (contracts[ES]["symbol"], contracts[ES]["local_symbol"]) == ("ES", "ESZ6")
    assert contracts[ES]["min_tick"] == 0.25 and contracts[AAPL]["currency"] == "USD"
    back = parquet_round_trip(frame)
    pd.testing.assert_frame_equal(back, frame)
    assert back.attrs == frame.attrs
    assert buffer.to_frame().attrs["contracts"][0]["local_symbol"] == "ESZ6"


async def test_contracts_returns_the_servers_contract_details(server):
    async with AsyncClient(server.url) as client:
        details = await client.contracts("ES")
        with pytest.raises(ContractNotFound):
            await client.contracts("NOSUCH")
    assert ES in set(details["contract_id"]) and set(details["symbol"]) == {"ES"}
    assert list(details.columns)[:4] == ["contract_id", "symbol", "local_symbol", "sec_type"]
    es = details.set_index("contract_id").loc[ES]
    assert (es["symbol"], es["local_symbol"], es["exchange"]) == ("ES", "ESZ6", "CME")
    assert (es["currency"], es["min_tick"], es["multiplier"]) == ("USD", 0.25, "50")
    assert es["last_trade_date"] == "20261218"


def test_footprint_takes_min_tick_from_the_frames_contracts():
    rows = [
        {"contract_id": 1, "tick_type": "bid_ask", "recv_ns": 1, "bid_price": 99.0},
        {"contract_id": 1, "tick_type": "bid_ask", "recv_ns": 2, "ask_price": 101.0},
    ]
    for i, price in enumerate([100.1, 100.3, 100.6, 100.9]):
        rows.append(
            {"contract_id": 1, "tick_type": "last", "recv_ns": 3 + i, "price": price, "size": 1}
        )
    ticks = ticks_to_frame(rows)
    ticks.attrs["contracts"] = [{"contract_id": 1, "min_tick": 0.5}]
    trades = classify(ticks)
    assert trades.attrs == ticks.attrs  # classify carries the metadata along
    levels = footprint(trades)
    assert list(levels["price"]) == [100.0, 100.5]
    pd.testing.assert_frame_equal(levels, footprint(trades, tick_size=0.5))
    trades.attrs = {}
    assert len(footprint(trades)) == 4  # no metadata: every price its own level


def test_footprint_grids_each_contract_by_its_own_min_tick():
    rows = []
    for contract, prices in ((1, [10.2, 10.7]), (2, [10.2, 10.7])):
        rows.append({"contract_id": contract, "tick_type": "bid_ask", "recv_ns": 0,
                     "bid_price": 9.0, "ask_price": 11.0})  # fmt: skip
        rows += [
            {"contract_id": contract, "tick_type": "last", "recv_ns": 1, "price": p, "size": 1}
            for p in prices
        ]
    ticks = ticks_to_frame(rows)
    ticks.attrs["contracts"] = [{"contract_id": 1, "min_tick": 1.0}]  # 2 is not described
    levels = footprint(classify(ticks))
    by = levels.groupby("contract_id")["price"].apply(list).to_dict()
    assert by == {1: [10.0], 2: [10.2, 10.7]}
    assert np.isfinite(levels["price"]).all()
