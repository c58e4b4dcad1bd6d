"""merge_history: historical quotes and trades with one-second IB times -> one tick frame."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from bench.history_order import FULL, chosen, measure
from ibstream.analytics import classify
from ibstream.client.frames import TICK_COLUMNS
from ibstream.datasets import load_recorded, recorded_names
from ibstream.history.merge import DEFAULT_TIE_BREAK, TIE_BREAKS, merge_history

T0 = pd.Timestamp("2026-03-02 14:30:00", tz="UTC")


def at(second: int) -> pd.Timestamp:
    return T0 + pd.Timedelta(seconds=second)


def quotes(*rows: tuple) -> pd.DataFrame:
    """(contract, second, bid, bid_size, ask, ask_size) rows, in IB's order."""
    frame = pd.DataFrame(
        rows, columns=["contract_id", "s", "bid_price", "bid_size", "ask_price", "ask_size"]
    )
    return frame.assign(ib_time=frame.pop("s").map(at))


def trades(*rows: tuple) -> pd.DataFrame:
    """(contract, second, price, size) rows, in IB's order."""
    frame = pd.DataFrame(rows, columns=["contract_id", "s", "price", "size"])
    return frame.assign(ib_time=frame.pop("s").map(at), exchange="CME")


# One contract: a quote in second 0, then in second 1 a quote that leaves the ask as it was,
# the 2-lot trade at the ask, the quote that shows it taken (ask size 5 -> 3), a quote that
# empties the ask level (a 3-lot trade took it) and that trade.
QUOTES = quotes(
    (1, 0, 100.0, 4, 101.0, 5),
    (1, 1, 100.0, 6, 101.0, 5),
    (1, 1, 100.0, 6, 101.0, 3),
    (1, 1, 100.0, 6, 102.0, 7),
)
TRADES = trades((1, 1, 101.0, 2), (1, 1, 101.0, 3))


def layout(frame: pd.DataFrame) -> str:
    """The merged rows as letters: q quote, t trade."""
    return "".join("q" if kind == "bid_ask" else "t" for kind in frame["tick_type"].astype(str))


@pytest.mark.parametrize(
    ("tie_break", "expected"),
    [
        ("taken", "qqtqtq"),  # each trade after the quote it was taken from
        ("at_price", "qttqqq"),  # the first quote at their price: second 0's (p = 0)
        ("spread", "qqtqtq"),  # 3 quotes, 2 trades: after round(3/3) = 1 and round(6/3) = 2
        ("quotes_first", "qqqqtt"),
        ("trades_first", "qttqqq"),
    ],
)
def test_each_tie_break_places_trades_as_documented(tie_break, expected):
    assert layout(merge_history(QUOTES, TRADES, tie_break=tie_break)) == expected


def test_taken_lets_each_trade_meet_the_quote_it_was_taken_from():
    merged = merge_history(QUOTES, TRADES)
    classified = classify(merged)
    assert classified[["bid", "ask"]].to_numpy().tolist() == [[100.0, 101.0], [100.0, 101.0]]
    assert classified["side"].astype(str).tolist() == ["buy", "buy"]
    before = merge_history(QUOTES, TRADES, tie_break="quotes_first")
    assert classify(before)["ask"].tolist() == [102.0, 102.0]  # the quote after both trades


def test_taken_keeps_a_sweep_through_the_book_before_the_quote_that_shows_it():
    """A 2-lot buy empties the 101 ask, a 1-lot buy goes on at 102 (a level the quote never
    showed), then the quote moves to 102 / 103: both trades are buys against the old quote."""
    q = quotes((1, 0, 100.0, 4, 101.0, 2), (1, 1, 102.0, 5, 103.0, 7))
    t = trades((1, 1, 101.0, 2), (1, 1, 102.0, 1))
    merged = merge_history(q, t)
    assert layout(merged) == "qttq"
    assert classify(merged)["side"].astype(str).tolist() == ["buy", "buy"]
    assert layout(merge_history(q, t, tie_break="quotes_first")) == "qqtt"


def test_deterministic_keeps_every_row_orders_by_second_and_gives_the_tick_frame():
    q = pd.concat([QUOTES, QUOTES.assign(contract_id=7), quotes((2, 1, 50.0, 1, 50.5, 1))])
    t = pd.concat([TRADES.assign(contract_id=7), TRADES, trades((2, 0, 50.5, 1))])
    mid = pd.DataFrame(
        {"contract_id": [1, 1], "ib_time": [at(1), at(0)], "mid_price": [100.5, 100.5]}
    )
    merged = merge_history(q, t, mid)
    again = merge_history(q.copy(), t.copy(), mid.copy())
    pd.testing.assert_frame_equal(merged, again)
    assert len(merged) == len(q) + len(t) + len(mid)
    assert merged.dtypes.to_dict() == TICK_COLUMNS
    assert merged.index.name == "time" and str(merged.index.dtype) == "datetime64[ns, UTC]"
    assert merged.index.is_monotonic_increasing and merged.index.is_unique
    assert merged["ib_time"].is_monotonic_increasing
    # the index is IB's second plus the position within it
    within = merged.index.asi8 - pd.DatetimeIndex(merged["ib_time"]).as_unit("ns").asi8
    assert within[:3].tolist() == [0, 1, 2] and (within < len(merged)).all()
    seconds = merged[merged["ib_time"] == at(1)]
    assert seconds["contract_id"].is_monotonic_increasing  # contracts in id order
    # each stream's own order kept, per contract
    for cid in (1, 7):
        mine = merged[(merged["contract_id"] == cid) & (merged["tick_type"] == "bid_ask")]
        assert mine["ask_size"].tolist() == [5, 5, 3, 7]
    # a midpoint goes after its second's quotes and trades
    ones = merged[(merged["contract_id"] == 1) & (merged["ib_time"] == at(1))]
    assert ones["tick_type"].astype(str).tolist()[-1] == "mid_point"
    assert (merged["sequence"] == 0).all() and (merged["exchange"].dropna() == "CME").all()
    assert len(classify(merged)) == len(t)


def test_arrow_tables_epoch_seconds_and_input_order_across_seconds():
    shuffled = QUOTES.iloc[[1, 0, 2, 3]]  # second 1 before second 0; within each, IB's order
    epoch = TRADES.assign(
        ib_time=(TRADES["ib_time"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta("1s")
    )
    merged = merge_history(pa.Table.from_pandas(shuffled, preserve_index=False), epoch)
    pd.testing.assert_frame_equal(merged, merge_history(QUOTES, TRADES))
    assert merged[merged["tick_type"] == "bid_ask"]["ask_size"].tolist() == [5, 5, 3, 7]


def test_empty_input_gives_an_empty_tick_frame():
    for merged in (merge_history(), merge_history(QUOTES.iloc[:0], TRADES.iloc[:0])):
        assert merged.empty and merged.dtypes.to_dict() == TICK_COLUMNS
        assert classify(merged).empty


@pytest.mark.parametrize("tie_break", TIE_BREAKS)
def test_trades_alone_keep_their_order(tie_break):
    """No quotes (none asked, or IB refused them): the trades in their own order."""
    merged = merge_history(trades=TRADES, tie_break=tie_break)
    assert layout(merged) == "tt" and list(merged["size"]) == [2.0, 3.0]


def test_bad_input_names_the_call_to_make():
    with pytest.raises(TypeError, match=r"merge_history\(trades=\.\.\.\) takes a pandas DataFrame"):
        merge_history(trades=[{"price": 1.0}])
    with pytest.raises(ValueError, match=r"looks like trades: pass it as merge_history\(trades="):
        merge_history(quotes=TRADES)
    with pytest.raises(ValueError, match=r"no ib_time column.*frame\.assign\(ib_time="):
        merge_history(trades=TRADES.drop(columns="ib_time"))
    with pytest.raises(ValueError, match=r"no contract_id column"):
        merge_history(quotes=QUOTES.drop(columns="contract_id"))
    mixed = pd.concat([QUOTES.assign(tick_type="bid_ask"), TRADES.assign(tick_type="last")])
    with pytest.raises(ValueError, match=r"got bid_ask tick types.*split a mixed frame"):
        merge_history(trades=mixed)
    ib_names = merge_history(QUOTES.assign(tick_type="BidAsk"), TRADES.assign(tick_type="AllLast"))
    assert ib_names["tick_type"].astype(str).tolist()[2] == "all_last"  # IB's spelling taken
    with pytest.raises(ValueError, match=r"1 rows have no ib_time"):
        merge_history(trades=TRADES.assign(ib_time=[at(1), pd.NaT]))
    with pytest.raises(ValueError, match=r"unknown tie_break 'first'; use one of taken"):
        merge_history(QUOTES, TRADES, tie_break="first")


def test_the_default_tie_break_is_the_most_accurate_on_the_recorded_samples():
    """The choice stays justified: after truncating the bundled samples' times to the
    second, the default is at least as accurate as every alternative for each data set and
    method, best in the mean, and still short of full resolution (it cannot be exact)."""
    rows = [r for name in recorded_names() for r in measure(load_recorded(name))]
    accuracy = {(r.data, r.method, r.order): r.accuracy for r in rows}
    assert chosen(rows) == DEFAULT_TIE_BREAK
    for data, method, order in accuracy:
        assert accuracy[data, method, DEFAULT_TIE_BREAK] >= accuracy[data, method, order] or (
            order == FULL
        ), (data, method, order)
    mean = {o: np.mean([r.accuracy for r in rows if r.order == o]) for o in (FULL, *TIE_BREAKS)}
    assert mean[FULL] > mean[DEFAULT_TIE_BREAK]
