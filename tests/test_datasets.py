"""The recorded-data loader: both layouts, arrival order, the truth per trade, the data
directory lookup and its errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ibstream.analytics import classify
from ibstream.client.frames import TICK_COLUMNS
from ibstream.datasets import BUNDLED, DATA_ENV, data_dir, load_recorded, recorded_names
from tests.data import BINANCE, CME, DATASETS, recorded


@pytest.mark.parametrize(
    ("dataset", "trades", "quotes", "symbol", "exchange"),
    [(CME, 120, 2167, "ESU4", "CME"), (BINANCE, 9999, 9999, "BTCUSDT", "binance-futures")],
)
def test_loads_a_tick_frame_in_arrival_order_with_the_true_sides(
    dataset, trades, quotes, symbol, exchange
):
    data = recorded(dataset)
    ticks = data.ticks
    assert (data.name, data.symbol, data.exchange, data.clock) == (
        dataset,
        symbol,
        exchange,
        "receive",
    )
    assert ticks.dtypes.to_dict() == TICK_COLUMNS
    assert str(ticks.index.dtype) == "datetime64[ns, UTC]" and ticks.index.name == "time"
    assert ticks.index.is_monotonic_increasing
    assert ticks["tick_type"].value_counts().to_dict() == {
        "last": trades,
        "bid_ask": quotes,
        "all_last": 0,
        "mid_point": 0,
    }
    assert (ticks["contract_id"] == data.contract_id).all() and (ticks["sequence"] == 0).all()
    is_trade = ticks["tick_type"].eq("last").to_numpy()
    assert ticks.loc[is_trade, ["bid_price", "ask_price"]].isna().all().all()
    assert ticks.loc[~is_trade, ["price", "size", "exchange"]].isna().all().all()
    assert (ticks.loc[is_trade, "exchange"] == exchange).all()
    # on equal stamps the trade comes first: it was judged against the quotes before it
    stamp = ticks.index.asi8
    tie = np.flatnonzero(stamp[1:] == stamp[:-1])
    assert not (~is_trade[tie] & is_trade[tie + 1]).any()
    assert len(data.truth) == trades == len(classify(ticks))
    assert set(data.truth) == {"buy", "sell"}


def test_truth_follows_the_trades_file_rows():
    data = recorded(CME)
    raw = pd.read_csv(data_dir() / CME / "trades.csv.xz")
    assert data.truth.tolist() == raw["side"].tolist()  # one file, already in receive order
    trades = data.ticks[data.ticks["tick_type"] == "last"]
    assert trades["price"].tolist() == raw["price"].tolist()
    assert trades.index.asi8.tolist() == raw["ts_recv_ns"].tolist()


@pytest.mark.parametrize(
    ("dataset", "clock", "quoted", "buys"),
    [(CME, "receive", 119, None), (BINANCE, "receive", 497, None), (BINANCE, "exchange", 502, 269)],
)
def test_quote_window_per_clock(dataset, clock, quoted, buys):
    data = recorded(dataset, clock)
    assert data.clock == clock and int(data.quoted.sum()) == quoted
    if buys is not None:  # the README's count of the 502 trades in the quote window
        assert int((data.truth[data.quoted] == "buy").sum()) == buys


def test_exchange_clock_orders_by_event_time():
    data = recorded(BINANCE, "exchange")
    raw = pd.read_csv(data_dir() / BINANCE / "quotes.csv.xz")
    quotes = data.ticks[data.ticks["tick_type"] == "bid_ask"]
    assert quotes.index.asi8.tolist() == (raw["timestamp"] * 1000).tolist()


def test_score_counts_neutral_as_wrong_and_checks_the_length():
    data = recorded(CME)
    trades = classify(data.ticks, "tick")
    score = data.score(trades, quoted_only=False)
    assert score.trades == 120 and 0 < score.neutral < 1 - score.accuracy
    with pytest.raises(ValueError, match="120"):
        data.score(trades.iloc[:5])


def write(folder, name: str, text: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text)


def test_both_layouts_from_any_directory_and_the_env_override(tmp_path, monkeypatch):
    cme = tmp_path / "cme-nqz5-2025-01-02"
    write(
        cme,
        "trades.csv",
        "ts_recv_ns,ts_event_ns,price,size,side\n20,19,10.25,2,buy\n30,25,10.0,1,sell\n",
    )
    write(
        cme,
        "quotes.csv",
        "ts_recv_ns,ts_event_ns,bid_price,bid_size,ask_price,ask_size\n20,18,10.0,5,10.25,6\n"
        "40,26,10.0,5,10.25,6\n",
    )
    data = load_recorded(cme)
    assert (data.symbol, data.exchange) == ("NQZ5", "CME")
    assert data.ticks["tick_type"].astype(str).tolist() == ["last", "bid_ask", "last", "bid_ask"]
    assert data.quoted.tolist() == [False, True]
    assert classify(data.ticks)["side"].astype(str).tolist() == ["neutral", "sell"]
    assert load_recorded(cme, "exchange").ticks["tick_type"].astype(str).tolist() == [
        "bid_ask",
        "last",
        "last",
        "bid_ask",
    ]
    tardis = tmp_path / "okx-btc-2025-01-02"
    header = "exchange,symbol,timestamp,local_timestamp"
    write(
        tardis, "trades.csv", f"{header},id,side,price,amount\nokx,BTC-USDT,1,5,7,buy,100.5,0.25\n"
    )
    write(
        tardis,
        "quotes.csv",
        f"{header},ask_amount,ask_price,bid_price,bid_amount\nokx,BTC-USDT,1,3,1,100.5,100,2\n",
    )
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert data_dir() == tmp_path and recorded_names() == [cme.name, tardis.name]
    btc = load_recorded(tardis.name)
    assert (btc.symbol, btc.exchange) == ("BTC-USDT", "okx")
    assert btc.ticks.index.asi8.tolist() == [3000, 5000]
    assert btc.ticks["size"].iloc[1] == 0.25 and btc.ticks["ask_size"].iloc[0] == 1.0
    assert btc.score(classify(btc.ticks), quoted_only=False).accuracy == 1.0


def test_errors_name_the_problem(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=f"{DATA_ENV}=.*nowhere"):
        data_dir()
    with pytest.raises(FileNotFoundError, match="IBSTREAM_DATA"):
        load_recorded("no-such-set")
    odd = tmp_path / "odd"
    write(odd, "trades.csv", "time,price\n1,2\n")
    write(odd, "quotes.csv", "time,bid\n1,2\n")
    with pytest.raises(ValueError, match="unknown recorded-data layout.*ts_recv_ns"):
        load_recorded(odd)
    with pytest.raises(ValueError, match="unknown clock 'wall'; use one of receive, exchange"):
        load_recorded(odd, clock="wall")
    with pytest.raises(FileNotFoundError, match="no trades.csv"):
        load_recorded(tmp_path)


def test_the_shipped_data_sets_are_found_without_configuration(monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)
    assert data_dir() == BUNDLED and recorded_names() == sorted(DATASETS)
    assert (BUNDLED / "README.md").is_file()  # origin and licence travel with the data
    assert (len(recorded(CME).truth), len(recorded(BINANCE).truth)) == (120, 9999)


def test_ticks_round_trip_through_parquet(tmp_path):
    ticks = recorded(CME).ticks
    ticks.to_parquet(tmp_path / "ticks.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "ticks.parquet"), ticks)
