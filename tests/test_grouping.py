"""Grouping rows by contract: the path for a few contracts (a comparison per contract, no
hashing) gives exactly what hashing every row gives, and the arrival-order check that skips
the grouping when every time is in order still refuses a contract that goes back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ibstream.analytics import TradeClassifier, classify
from ibstream.analytics.grouping import _FEW, few_keys, group_rows, grouped_cumsum
from tests.data import tick_frame
from tests.test_classify import q, t


def hashed(keys: np.ndarray, sort: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """keys, order, starts as `pd.factorize` numbers the groups."""
    codes, uniques = pd.factorize(keys, sort=sort)
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=len(uniques))
    return uniques, order, np.cumsum(counts) - counts


@settings(max_examples=200, deadline=None)
@given(
    keys=st.lists(st.sampled_from([637533641, 5, -3, 2**40, 0, 7, 8, 9, 10, 11]), max_size=80),
    sort=st.booleans(),
)
def test_group_rows_equals_hashing_for_any_number_of_keys(keys, sort):
    keys = np.array(keys, dtype=np.int64)
    g = group_rows(keys, sort=sort)
    ids, order, starts = hashed(keys, sort) if len(keys) else (keys, keys, keys)
    np.testing.assert_array_equal(g.keys[0], ids)
    np.testing.assert_array_equal(g.order, order)
    np.testing.assert_array_equal(g.starts, starts)
    values = np.arange(len(keys), dtype=np.float64) / 3
    expected = np.zeros(len(keys))
    for k in np.unique(keys):
        expected[keys == k] = np.cumsum(values[keys == k])
    assert grouped_cumsum(values, keys).tolist() == expected.tolist()


@settings(max_examples=100, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 4),
            st.sampled_from([0.0, -0.0, 1.5, -2.25, 1e300, -1e300, 1e-300, np.nan, 3.0]),
        ),
        max_size=60,
    )
)
def test_grouped_cumsum_of_a_few_keys_has_the_bits_of_each_keys_cumsum(rows):
    """Two keys share one complex cumsum: each part must still be its key's plain float
    cumsum, bit for bit (signed zeros, NaN, overflow to inf, a key with one row)."""
    keys = np.array([k for k, _ in rows], dtype=np.int64) + 700
    values = np.array([v for _, v in rows], dtype=np.float64)
    expected = np.zeros(len(keys))
    with np.errstate(over="ignore", invalid="ignore"):
        for k in np.unique(keys):
            expected[keys == k] = np.cumsum(values[keys == k])
        got = grouped_cumsum(values, keys)
    np.testing.assert_array_equal(got.view(np.int64), expected.view(np.int64))


def test_few_keys_gives_up_beyond_its_limit_and_on_floats():
    assert few_keys(np.arange(_FEW + 1)) is None
    assert few_keys(np.array([1.0, np.nan, 1.0])) is None  # NaN never equals itself
    ids, members = few_keys(np.array([4, 2, 4, 9, 2]))
    assert ids.tolist() == [4, 2, 9]
    assert [m.tolist() for m in members] == [[0, 2], [1, 4], [3]]


def test_arrival_check_with_several_contracts():
    ok = [q(1.0, 2.0, c=1), q(5.0, 6.0, c=2), t(1.5, c=1), t(5.5, c=2)]
    stamps = [10, 30, 20, 40]  # across contracts out of order, each contract in order
    frame = tick_frame(r | {"recv_ns": s} for r, s in zip(ok, stamps, strict=True))
    assert classify(frame)["contract_id"].tolist() == [1, 2]
    stamps = [10, 30, 40, 20]  # contract 2's trade before its quote: refused
    frame = tick_frame(r | {"recv_ns": s} for r, s in zip(ok, stamps, strict=True))
    with pytest.raises(ValueError, match="contract\\(s\\) 2"):
        classify(frame)


def test_arrival_check_against_the_last_batch_with_several_contracts():
    live = TradeClassifier()
    first = [q(1.0, 2.0, c=1) | {"recv_ns": 100}, q(5.0, 6.0, c=2) | {"recv_ns": 110}]
    live.update(tick_frame(first))
    # in order within the batch, but contract 1 goes back before its last tick (100)
    later = [t(1.5, c=1) | {"recv_ns": 105}, t(5.5, c=2) | {"recv_ns": 120}]
    assert len(live.update(tick_frame(later))) == 2
    back = [t(1.5, c=1) | {"recv_ns": 101}, t(5.5, c=2) | {"recv_ns": 130}]
    with pytest.raises(ValueError, match="contract\\(s\\) 1"):
        live.update(tick_frame(back))
