"""Classification takes ticks as they arrived: it refuses receive times that go back, and it
counts a print reported both as `last` and as `all_last` once (batch and incremental alike)."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest

from ibstream.analytics import DeltaEngine, TradeClassifier, classify, summary
from ibstream.analytics.arrival import DoubleCountWarning
from tests.data import tick_frame
from tests.test_classify import q, t

T0 = 1_700_000_000_000_000_000


def stamped(rows: list[dict], step: int = 1000) -> list[dict]:
    return [r | {"recv_ns": T0 + i * step, "sequence": i + 1} for i, r in enumerate(rows)]


def market(c: int = 1) -> list[dict]:
    return [q(99.0, 100.0, c), t(100.0, c), q(100.0, 101.0, c), t(100.0, c), t(101.0, c)]


def test_a_frame_whose_receive_times_go_back_is_refused_with_the_fix():
    frame = tick_frame(stamped(market()))
    # as a batched stream used to arrive: the block of quotes, then the block of trades
    blocks = pd.concat(
        [frame[frame["tick_type"] == "bid_ask"], frame[frame["tick_type"] != "bid_ask"]]
    )
    for call in (classify, TradeClassifier().update, DeltaEngine().feed):
        with pytest.raises(ValueError, match=r'sort_index\(kind="stable"\)') as info:
            call(blocks)
        assert "contract(s) 1" in str(info.value)
    fixed = classify(blocks.sort_index(kind="stable"))
    pd.testing.assert_frame_equal(fixed, classify(frame))
    assert fixed["side"].astype(str).tolist() == ["buy", "sell", "buy"]


def test_contracts_each_in_order_may_interleave_in_any_order():
    one, two = tick_frame(stamped(market(1))), tick_frame(stamped(market(2), step=700))
    merged = pd.concat([one, two]).sort_index(kind="stable")
    pd.testing.assert_frame_equal(
        classify(pd.concat([one, two])), classify(merged).sort_values("contract_id", kind="stable")
    )


def test_the_incremental_classifiers_refuse_a_batch_before_the_last_and_change_nothing():
    rows = stamped(market())
    classifier, engine = TradeClassifier(), DeltaEngine()
    classifier.update(rows[2:]), engine.feed(rows[2:])
    state, before = classifier.state, engine.summary()
    for call in (classifier.update, engine.feed):
        with pytest.raises(ValueError, match="receive times go back"):
            call(rows[:2])
    pd.testing.assert_frame_equal(classifier.state, state)
    pd.testing.assert_frame_equal(engine.summary(), before)


def doubled_rows() -> list[dict]:
    """ES subscribed as last and all_last: each print twice (in either order), plus an odd
    lot in all_last only."""
    rows = [q(99.0, 100.0)]
    for price, size, odd in [(100.0, 2.0, False), (99.0, 1.0, True), (100.0, 3.0, False)]:
        rows.append(t(price, kind="all_last") | {"size": size})
        if not odd:
            rows.insert(len(rows) - (price == 100.0 and size == 3.0), t(price) | {"size": size})
    return stamped(rows)


def test_last_and_all_last_of_one_contract_count_once_with_one_warning():
    rows = doubled_rows()
    only_all_last = [r for r in rows if r["tick_type"] != "last"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trades = classify(tick_frame(rows))
    assert [w.category for w in caught] == [DoubleCountWarning]
    assert "all_last" in str(caught[0].message) and "contract(s) 1" in str(caught[0].message)
    expected = classify(tick_frame(only_all_last))
    pd.testing.assert_frame_equal(summary(trades), summary(expected))
    assert summary(trades)["total_trades"].tolist() == [3]  # not 5
    # a last trade before the contract's first all_last one still counts: the rule looks
    # only back, so that the incremental engine, fed tick by tick, leaves out the same rows
    early = stamped([q(99.0, 100.0), t(100.0), t(100.0, kind="all_last")])
    assert len(classify(tick_frame(early))) == 2


@pytest.mark.parametrize("cut", range(1, 7))
def test_the_incremental_engine_leaves_out_the_same_last_trades_in_any_split(cut):
    rows = doubled_rows()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DoubleCountWarning)
        whole = classify(tick_frame(rows))
        engine, classifier = DeltaEngine(), TradeClassifier()
        parts = [rows[:cut], rows[cut:]]
        got = pd.concat([classifier.update(tick_frame(p)) for p in parts])
        for p in parts:
            engine.feed(p)
    pd.testing.assert_frame_equal(got, whole)
    pd.testing.assert_frame_equal(engine.summary(), summary(whole))
    totals = engine.summary().iloc[0]
    assert totals["buy_volume"] + totals["sell_volume"] + totals["neutral_volume"] == 6.0
