"""The columnar history path: the `taken` tie-break's lookup against its walk, receive stamps
fitted in numpy against the per-stamp rule, and the columns a history answer is made of."""

from __future__ import annotations

import numpy as np
import pytest

from ibstream.history import order, taken
from ibstream.history.order import history_order
from ibstream.server.tick_columns import SCHEMA, Ticks, json_default
from ibstream.store import fill


def market(rng: np.random.Generator, n: int, noisy: bool) -> tuple:
    """Random quotes, trades and midpoints of one or two contracts over a few seconds, on a
    quarter-point grid (`noisy`: some prices off it by less than, or more than, the
    tolerance), with missing sides."""
    kind = rng.choice([0, 0, 1, 2], n).astype(np.int8)
    contract = rng.choice([1, 2], n)
    seconds = np.sort(rng.integers(0, 4, n)) * 1_000_000_000
    bid = 100 + 0.25 * rng.integers(0, 4, n)
    ask = bid + 0.25 * rng.integers(0, 3, n)
    price = 100 + 0.25 * rng.integers(0, 6, n)
    if noisy:
        ask = ask + rng.choice([0, 1e-7, -1e-7, 3e-6, 5e-6], n)
        price = price + rng.choice([0, 5e-7, -4e-6], n)
    bid_size, ask_size = (rng.integers(0, 5, n).astype(float) for _ in range(2))
    bid, ask = np.where(bid_size == 0, np.nan, bid), np.where(ask_size == 0, np.nan, ask)
    size = rng.integers(1, 4, n).astype(float)
    return contract, seconds, kind, (price, size), (bid, bid_size, ask, ask_size)


@pytest.mark.parametrize("noisy", [False, True])
def test_taken_lookup_orders_as_the_walk_does(monkeypatch: pytest.MonkeyPatch, noisy: bool):
    rng = np.random.default_rng(7)
    cases = [market(rng, int(rng.integers(1, 80)), noisy) for _ in range(400)]
    looked_up = [history_order(*case, "taken") for case in cases]
    monkeypatch.setattr(order, "LOOKUP", False)
    walked = [history_order(*case, "taken") for case in cases]
    differ = [i for i, (a, b) in enumerate(zip(looked_up, walked, strict=True)) if (a != b).any()]
    assert not differ, f"{len(differ)} of {len(cases)} cases ordered differently: {differ[:5]}"


@pytest.mark.parametrize("noisy", [False, True])
def test_taken_index_holds_each_quote_under_its_key_in_ascending_order(noisy: bool):
    """The lookup's index, built by sorting in numpy, against one made a quote at a time:
    every flagged quote under its key (a value or a tuple), indices ascending."""
    rng = np.random.default_rng(11)
    for _ in range(200):
        n = int(rng.integers(0, 60))
        _, _, _, _, (bid, bid_size, _, _) = market(rng, n, noisy)
        where = rng.random(n) < 0.7
        price_keys, size_keys = taken._keys(bid), taken._keys(bid_size - 1.5)
        for keys in ((price_keys,), (price_keys, size_keys)):
            expected: dict = {}
            for k in np.flatnonzero(where).tolist():
                key = tuple(int(c[k]) for c in keys)
                expected.setdefault(key[0] if len(keys) == 1 else key, []).append(k)
            assert taken._index(where, *keys) == expected


def fit_one_by_one(wanted: list[int], after: int, before: int) -> list[int]:
    """The rule, a stamp at a time: up past the one before, down below the one after."""
    out, previous = [], after
    for stamp in wanted:
        previous = max(stamp, previous + 1)
        out.append(previous)
    ceiling = before
    for i in range(len(out) - 1, -1, -1):
        ceiling = out[i] = min(out[i], ceiling - 1)
    if out and out[0] <= after:
        raise ValueError("no fit")
    return out


def test_stamps_fitted_in_numpy_follow_the_rule_stamp_by_stamp():
    rng = np.random.default_rng(3)
    for _ in range(3000):
        wanted = sorted(rng.integers(0, 30, int(rng.integers(0, 9))).tolist())
        after = int(rng.integers(-5, 20))
        before = int(rng.integers(after, 45))
        try:
            expected = fit_one_by_one(wanted, after, before)
        except ValueError:
            with pytest.raises(ValueError, match="do not fit"):
                fill.fit_stamps_array(np.array(wanted, np.int64), after, before)
            continue
        assert fill.fit_stamps_array(np.array(wanted, np.int64), after, before).tolist() == expected


def test_history_ticks_as_columns_give_the_wire_ticks_and_one_arrow_batch():
    ticks = [
        {"contract_id": 5, "tick_type": "last", "sequence": 0, "recv_ns": 20, "price": 1.5,
         "size": 2.0, "exchange": "CME", "ib_time": 0, "source": "ib"},
        {"contract_id": 5, "tick_type": "bid_ask", "sequence": 3, "recv_ns": 10,
         "bid_price": 1.25, "ask_price": 1.5, "bid_size": 0.0, "ask_size": 4.0, "ib_time": 0,
         "source": "live"},
    ]  # fmt: skip
    a, b = Ticks.from_dicts(ticks[:1]), Ticks.from_dicts(ticks[1:])
    both = Ticks.merge([a, b])
    assert both.to_dicts() == [ticks[1], ticks[0]]  # by receive time; nulls left out, 0.0 kept
    tie = Ticks.from_dicts([{**ticks[1], "recv_ns": 20}])
    assert [t["tick_type"] for t in Ticks.merge([a, tie]).to_dicts()] == ["last", "bid_ask"]
    batch = both.batch()
    assert batch.schema == SCHEMA and batch.num_rows == 2
    assert batch.column("stream_id").to_pylist() == ["bid_ask", "last"]
    assert json_default(both[1:]) == [ticks[0]] and both.count("source", "ib") == 1
    with pytest.raises(TypeError, match="not JSON serializable"):
        json_default(object())
