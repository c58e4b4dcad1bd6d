"""The incremental TradeClassifier equals batch `classify` on the whole sequence, for every
method and any split into batches, frames or wire rows alike."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ibstream.analytics import METHODS, TRADE_COLUMNS, TradeClassifier, classify
from ibstream.analytics.arrival import DoubleCountWarning
from tests.data import DATASETS, recorded, tick_frame
from tests.test_classify import q, t, ticks_st


def feed(classifier: TradeClassifier, frame: pd.DataFrame, cuts: list[int]) -> pd.DataFrame:
    bounds = [0, *sorted(cuts), len(frame)]
    parts = [classifier.update(frame.iloc[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
    return pd.concat(parts)


@pytest.mark.filterwarnings("ignore::ibstream.analytics.DoubleCountWarning")  # mixes both
@settings(max_examples=200, deadline=None)
@given(
    rows=ticks_st,
    method=st.sampled_from(METHODS),
    cuts=st.lists(st.integers(0, 60), max_size=8),
)
def test_any_batch_split_equals_one_batch(rows, method, cuts):
    frame = tick_frame(rows)
    whole = classify(frame, method)
    got = feed(TradeClassifier(method), frame, [c for c in cuts if c <= len(frame)])
    pd.testing.assert_frame_equal(got, whole)


@settings(max_examples=200, deadline=None)
@given(
    rows=ticks_st,
    method=st.sampled_from(METHODS),
    cuts=st.lists(st.integers(0, 60), max_size=12),
    as_rows=st.lists(st.booleans(), min_size=13, max_size=13),
)
def test_wire_rows_and_frames_in_any_mix_equal_one_batch(rows, method, cuts, as_rows):
    """The per-tick path (wire rows) and the vectorised one (frames) carry one state."""
    rows = [
        r | {"recv_ns": 1_700_000_000_000_000_000 + i, "sequence": i} for i, r in enumerate(rows)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DoubleCountWarning)
        whole = classify(tick_frame(rows), method)
        classifier = TradeClassifier(method)
        bounds = [0, *sorted(c for c in cuts if c <= len(rows)), len(rows)]
        parts = [
            classifier.update(rows[a:b] if wire else tick_frame(rows[a:b]))
            for a, b, wire in zip(bounds, bounds[1:], as_rows, strict=False)
        ]
    parts = [p for p in parts if len(p)]  # (an empty frame's index may have another unit)
    assert len(whole) == sum(map(len, parts))
    if parts:
        pd.testing.assert_frame_equal(pd.concat(parts), whole)


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("method", METHODS)
def test_recorded_data_in_many_random_batches(dataset, method):
    frame = recorded(dataset).ticks
    rng = np.random.default_rng(len(frame) + len(method))
    cuts = rng.choice(len(frame), size=len(frame) // 40, replace=False).tolist()
    classifier = TradeClassifier(method)
    got = feed(classifier, frame, cuts)
    pd.testing.assert_frame_equal(got, classify(frame, method))
    assert classifier.trades_seen == len(got) == int(frame["tick_type"].eq("last").sum())


def test_wire_rows_one_at_a_time_equal_the_frame():
    rows = [
        q(100.0, 100.5, c=1) | {"recv_ns": 10, "sequence": 1},
        t(100.5, c=1) | {"recv_ns": 11, "sequence": 2, "exchange": "CME"},
        q(50.0, 50.0, c=2) | {"recv_ns": 12, "sequence": 3},
        t(50.0, c=2, kind="AllLast") | {"recv_ns": 13, "sequence": 4},
        t(100.25, c=1) | {"recv_ns": 14, "sequence": 5},
        {"contract_id": 1, "tick_type": "mid_point", "mid_price": 1.0, "recv_ns": 15},
        t(49.75, c=2, kind="AllLast") | {"recv_ns": 16, "sequence": 6},
    ]
    classifier = TradeClassifier("lee-ready")
    got = pd.concat([classifier.update(row) for row in rows])
    frame = tick_frame(
        r | {"tick_type": "all_last"} if r["tick_type"] == "AllLast" else r for r in rows
    )
    pd.testing.assert_frame_equal(got, classify(frame, "lee_ready"), check_index_type=True)
    assert got["side"].astype(str).tolist() == ["buy", "neutral", "sell", "sell"]
    assert got["exchange"].tolist()[0] == "CME" and got.dtypes.to_dict() == TRADE_COLUMNS
    assert classifier.update(rows[0] | {"recv_ns": 17}).empty
    with pytest.raises(ValueError, match="sort_index"):  # back in time: refused
        classifier.update(rows[0])


def test_state_carries_per_contract_and_reset_forgets():
    classifier = TradeClassifier("emo")
    classifier.update([q(10.0, 11.0, c=7), t(10.5, c=7), t(10.75, c=7)])
    state = classifier.state
    assert state.loc[7].tolist() == [10.0, 11.0, 10.75, 1, 0, False]  # time 0: no recv_ns
    assert classifier.update([t(10.75, c=7)])["side"].tolist() == ["buy"]  # zero uptick
    classifier.reset()
    assert classifier.state.empty and classifier.trades_seen == 0
    assert classifier.update([t(10.75, c=7)])["side"].tolist() == ["neutral"]
    with pytest.raises(ValueError, match="unknown classification method"):
        TradeClassifier("vwap")
