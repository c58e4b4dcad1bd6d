"""Quote imbalance and the micro-price: hand-built quotes, Stoikov's G* on a chain solved by
hand, where it is not defined, the recorded data, and any split of the quotes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ibstream.analytics import (
    MICROPRICE_COLUMNS,
    QUOTE_IMBALANCE_COLUMNS,
    STOIKOV_COLUMNS,
    classify,
    microprice,
    quote_imbalance,
    stoikov_table,
)
from tests.data import CME, recorded, tick_frame


def quotes(rows: list[tuple], contract: int = 1) -> pd.DataFrame:
    """(bid, bid_size, ask, ask_size) per row -> a tick frame of bid_ask rows."""
    return tick_frame(
        {
            "tick_type": "bid_ask",
            "contract_id": contract,
            "bid_price": b,
            "bid_size": bs,
            "ask_price": a,
            "ask_size": az,
        }
        for b, bs, a, az in rows
    )


def test_weighted_mid_leans_to_the_thin_side_and_imbalance_is_signed():
    got = microprice(quotes([(100.0, 1, 101.0, 3), (100.0, 3, 101.0, 1)]))
    assert got["mid"].tolist() == [100.5, 100.5]
    assert got["weighted_mid"].tolist() == [100.25, 100.75]
    assert got["microprice"].tolist() == [100.25, 100.75]
    assert got["imbalance"].tolist() == [-0.5, 0.5]
    imb = quote_imbalance(quotes([(100.0, 1, 101.0, 3), (100.0, 0, 101.0, 0)]))
    assert imb["imbalance"].iloc[0] == -0.5 and np.isnan(imb["imbalance"].iloc[1])


def test_an_empty_side_or_a_missing_size_gives_nan_and_trades_are_left_out():
    ticks = quotes([(100.0, 0, 101.0, 3), (100.0, np.nan, 101.0, 3), (-1.0, 2, 1.0, 2)])
    ticks = pd.concat([ticks, tick_frame([{"tick_type": "last", "price": 5.0, "size": 1}])])
    got = microprice(ticks)
    assert len(got) == 3
    assert np.isnan(got["mid"].iloc[0]) and np.isnan(got["microprice"].iloc[0])
    assert got["imbalance"].iloc[0] == -1.0  # no bids at all
    assert np.isnan(got["weighted_mid"].iloc[1]) and got["mid"].iloc[1] == 100.5
    assert got["microprice"].iloc[2] == 0.0  # negative prices are prices


def test_empty_quotes_give_empty_frames_with_the_columns():
    empty = quotes([]).iloc[:0]
    assert dict(microprice(empty).dtypes.astype(str)) == MICROPRICE_COLUMNS
    assert dict(quote_imbalance(empty).dtypes.astype(str)) == QUOTE_IMBALANCE_COLUMNS
    table = stoikov_table(empty)
    assert table.empty and dict(table.dtypes.astype(str)) == STOIKOV_COLUMNS
    assert microprice(empty, "stoikov").empty


def test_frames_of_the_wrong_kind_name_the_call_to_make():
    trades = classify(recorded(CME).ticks)
    for call in (microprice, quote_imbalance, stoikov_table):
        with pytest.raises(ValueError, match=r"takes quotes .* got trades: pass the tick frame"):
            call(trades)
    with pytest.raises(ValueError, match="method must be one of weighted, stoikov"):
        microprice(recorded(CME).ticks, "bvc")
    with pytest.raises(ValueError, match="table must be a frame from .*stoikov_table"):
        microprice(recorded(CME).ticks, "stoikov", table=trades)
    with pytest.raises(ValueError, match="fit arguments .* go with method='stoikov' only"):
        microprice(recorded(CME).ticks, n_spread=3)
    with pytest.raises(ValueError, match="n_imbalance must be an int >= 2"):
        stoikov_table(recorded(CME).ticks, n_imbalance=1)


# Three imbalance buckets, one tick (0.25) of spread: bid-heavy (9 vs 1) is bucket 2,
# balanced (5 vs 5) bucket 1. Mids 100, 100.25, 100.5, 100.75 with states 2, 1, 1, 2.
CHAIN = [
    (100 - 0.125 + 0.25 * i, s, 100.125 + 0.25 * i, 10 - s) for i, s in enumerate([9, 5, 5, 9])
]


def test_stoikov_g_star_on_a_chain_solved_by_hand():
    # transitions (and their mirrors): 2 -(+1)-> 1, 1 -(+1)-> 1, 1 -(+1)-> 2, so
    # G1 = (-1, 0, 1) ticks and B G1 = 0: G* = G1, one tick toward the heavy side
    table = stoikov_table(quotes(CHAIN), n_imbalance=3, n_spread=1)
    assert table["tick_size"].eq(0.25).all()  # the smallest spread
    np.testing.assert_allclose(table["adjustment_ticks"], [-1, 0, 1], atol=1e-12)
    assert table["observations"].tolist() == [0, 2, 1]
    got = microprice(quotes(CHAIN), "stoikov", n_imbalance=3, n_spread=1)
    np.testing.assert_allclose(got["microprice"], got["mid"] + [0.25, 0, 0, 0.25], atol=1e-12)
    # a table fitted once prices other quotes (live use): same answer, row by row
    again = microprice(quotes(CHAIN), "stoikov", table=table)
    pd.testing.assert_frame_equal(again, got)


def test_stoikov_is_nan_where_it_is_not_well_defined():
    trend = [(100 - 0.125 + 0.25 * i, 9, 100.125 + 0.25 * i, 1) for i in range(4)]
    table = stoikov_table(quotes(trend), n_imbalance=3, n_spread=1)  # the drift never ends
    assert table["adjustment"].isna().all()
    still = [(99.875, 5, 100.125, 5)] * 4  # the mid never moves: 1 - Q is singular
    assert stoikov_table(quotes(still), n_imbalance=3, n_spread=1)["adjustment"].isna().all()
    wide = microprice(quotes([(99.0, 5, 101.0, 5), *CHAIN]), "stoikov", n_imbalance=3, n_spread=1)
    assert np.isnan(wide["microprice"].iloc[0])  # a spread of 8 ticks: outside the states


def test_stoikov_on_recorded_es_is_antisymmetric_and_rises_with_bid_size():
    table = stoikov_table(recorded(CME).ticks)
    one = table[table["spread"] == 1]["adjustment_ticks"].to_numpy()
    assert len(one) == 11 and np.isfinite(one).all()
    np.testing.assert_allclose(one, -one[::-1], atol=1e-9)
    assert (np.diff(one) > 0).all()  # more bid size, a higher micro-price
    assert (np.abs(one) < 1).all()  # within a tick of the mid


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 8).map(lambda k: 100 + 0.25 * k),
            st.sampled_from([0.0, 1.0, 2.0, 5.0, np.nan]),
            st.integers(1, 3),
            st.sampled_from([0.0, 1.0, 3.0, 7.0]),
        ),
        max_size=30,
    ),
    cuts=st.lists(st.integers(0, 30), max_size=4),
)
def test_any_split_of_the_quotes_gives_the_same_rows(rows, cuts):
    ticks = quotes([(b, bs, b + 0.25 * w, az) for b, bs, w, az in rows])
    table = stoikov_table(quotes(CHAIN), n_imbalance=3, n_spread=1)
    edges = [0, *sorted(min(c, len(ticks)) for c in cuts), len(ticks)]
    for call in (
        quote_imbalance,
        microprice,
        lambda q: microprice(q, "stoikov", table=table),
    ):
        parts = [call(ticks.iloc[a:b]) for a, b in zip(edges, edges[1:], strict=False)]
        pd.testing.assert_frame_equal(pd.concat(parts), call(ticks), check_exact=True)
