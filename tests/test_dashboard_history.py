"""`dashboard(history="30min")`: the seam between the history drawn first and the live stream
that follows holds every tick once: stored ticks matched by their receive stamp, ticks
fetched from IB by IB second and fields, counted (`ibstream.widgets.seam`)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from ibstream.client import Client
from ibstream.client.frames import ticks_to_frame
from ibstream.widgets.model import LiveModel
from ibstream.widgets.seam import FIELDS, Seam, history_span
from tests.client_fixtures import threaded_server
from tests.conftest import WAIT
from tests.test_widgets import START, market_rows

NS = 1_000_000_000


def truth_rows(n: int = 3000, seed: int = 5) -> list[dict]:
    """Quotes and trades 20 ms apart with IB's second, and repeated trades: equal price and
    size twice in one second, the case a count must get right."""
    rows = market_rows(n, seed=seed, step_ns=20_000_000)
    out = []
    for row in rows:
        out.append(row)
        if row["tick_type"] == "last" and row["sequence"] % 3 == 0:
            out.append(dict(row))  # the same trade printed again in the same second
    for i, row in enumerate(out):  # restamped: strictly increasing, sequences per type
        row["recv_ns"] = START + i * 20_000_000
        row["ib_time"] = row["recv_ns"] // NS
    counters: dict[str, int] = {}
    for row in out:
        counters[row["tick_type"]] = row["sequence"] = counters.get(row["tick_type"], 0) + 1
    return out


def from_ib(rows: list[dict]) -> list[dict]:
    """The rows as the server gives ticks fetched from IB: sequence 0, the receive stamp
    synthesized from IB's second and the position in it."""
    out, position, second = [], 0, None
    for row in rows:
        position = position + 1 if row["ib_time"] == second else 0
        second = row["ib_time"]
        out.append(row | {"sequence": 0, "recv_ns": second * NS + position})
    return out


def key(row: dict) -> tuple:
    return (row["tick_type"], row["ib_time"], *(row.get(f) for f in FIELDS[row["tick_type"]]))


def admitted(seam: Seam, live: list[dict], seed: int) -> list[dict]:
    """The live rows through the seam in random batches, as the inbox hands them over."""
    rng, kept, at = np.random.default_rng(seed), [], 0
    while at < len(live):
        size = int(rng.integers(1, 60))
        kept += seam.admit(live[at : at + size])
        at += size
    return kept


@pytest.mark.parametrize("seed", range(6))
def test_ticks_fetched_from_ib_and_the_live_stream_join_with_every_tick_once(seed):
    truth = truth_rows(seed=seed)
    rng = np.random.default_rng(seed)
    seconds = sorted({r["ib_time"] for r in truth})
    end_second = int(rng.choice(seconds[5:-5]))  # IB's history: whole seconds before it
    j = next(i for i, r in enumerate(truth) if r["ib_time"] >= end_second)
    k = int(rng.integers(max(0, j - 150), j + 1))  # subscribed up to 3 s before the answer
    end_ns = truth[j]["recv_ns"] - 1  # the server's now: within the history's last second
    history = ticks_to_frame(from_ib(truth[:j]))
    seam = Seam(history, end_ns)
    kept = admitted(seam, truth[k:], seed)
    assert [key(r) for r in kept] == [key(r) for r in truth[j:]]  # none twice, none lost
    assert seam.dropped == j - k and not seam.open


@pytest.mark.parametrize("seed", range(4))
def test_stored_ticks_and_the_live_stream_join_on_the_receive_stamp(seed):
    truth = truth_rows(seed=seed)
    rng = np.random.default_rng(seed)
    j = int(rng.integers(200, len(truth) - 200))
    k = int(rng.integers(j - 150, j + 1))
    end_ns = int(rng.integers(truth[j - 1]["recv_ns"], truth[j]["recv_ns"]))  # mid-second
    seam = Seam(ticks_to_frame(truth[:j]), end_ns)
    kept = admitted(seam, truth[k:], seed)
    assert kept == truth[j:]
    assert seam.dropped == j - k


def test_a_live_tick_history_lacks_is_kept_even_with_its_twin_before_the_subscription():
    """Two equal trades in one second: one before the subscription (history only), one
    after the history's end (live only): the live one is new and stays."""
    second = START // NS
    trade = {"contract_id": 1, "tick_type": "last", "price": 10.0, "size": 2.0}
    before = trade | {"recv_ns": second * NS, "ib_time": second, "sequence": 0}
    quote = {"contract_id": 1, "tick_type": "bid_ask", "bid_price": 9.0, "ask_price": 10.0,
             "bid_size": 1.0, "ask_size": 1.0, "ib_time": second + 1, "sequence": 7,
             "recv_ns": (second + 1) * NS + 5}  # fmt: skip
    after = trade | {"recv_ns": (second + 2) * NS, "ib_time": second + 2, "sequence": 9}
    seam = Seam(ticks_to_frame([before]), end_ns=(second + 1) * NS + 10)
    assert seam.admit([quote, after]) == [quote, after]


def test_history_then_the_admitted_live_ticks_give_the_delta_of_the_whole_window():
    truth = truth_rows(seed=11)
    j, k = 1500, 1380
    history = ticks_to_frame(from_ib(truth[:j]))
    seam = Seam(history, truth[j]["recv_ns"] - 1)
    joined, whole = LiveModel("1h", "5s"), LiveModel("1h", "5s")
    joined.feed(history)
    for at in range(k, len(truth), 40):
        joined.feed(seam.admit(truth[at : at + 40]) or ticks_to_frame([]))
    whole.feed(truth)
    assert joined.cumulative_delta == whole.cumulative_delta != 0
    assert joined.trades_fed == whole.trades_fed
    assert joined.delta_since == history.index[0].value  # the delta starts with the window
    sides = joined.trades()["side"].astype(str).tolist()
    assert sides == whole.trades()["side"].astype(str).tolist()


def test_the_history_option_must_be_a_duration():
    assert history_span("30min") == 1800 * NS
    assert history_span(pd.Timedelta("2h")) == 7200 * NS
    for bad in ("soon", "2026-12-07T10:00", 30, "-1min"):
        with pytest.raises((TypeError, ValueError), match="history"):
            history_span(bad)


def test_equal_live_trades_are_dropped_only_as_often_as_the_history_holds_them():
    """IB's second the history holds in part (two equal trades live, one in the history):
    one is dropped, the other stays."""
    second = START // NS
    trade = {"contract_id": 1, "tick_type": "last", "price": 10.0, "size": 2.0, "ib_time": second}
    history = ticks_to_frame([trade | {"recv_ns": second * NS, "sequence": 0}])
    live = [trade | {"recv_ns": second * NS + n * 1000, "sequence": n} for n in (4, 5)]
    seam = Seam(history, end_ns=second * NS + 4500)
    assert seam.admit(live) == live[1:]


# -- the dashboard against a real server and simulator ------------------------------------


def frame_keys(frame: pd.DataFrame, first: int, end: int) -> Counter:
    """(tick type, IB second, fields) of a frame's ticks of IB seconds [first, end)."""
    rows = frame.assign(ib_time=frame["ib_time"].astype("int64") // NS)
    rows = rows[(rows["ib_time"] >= first) & (rows["ib_time"] < end)]
    return Counter(key(r) for r in tick_rows(rows))


def tick_rows(frame: pd.DataFrame) -> list[dict]:
    out = []
    for row in frame.reset_index(drop=True).to_dict("records"):
        out.append({k: v for k, v in row.items() if not (isinstance(v, float) and v != v)})
    for row in out:
        row["tick_type"] = str(row["tick_type"])
    return out


@pytest.mark.parametrize("source", ["ib", "store"])
def test_a_dashboard_opened_mid_session_draws_the_past_and_joins_the_live_stream(source, tmp_path):
    """An independent subscriber's ticks from before the dashboard opened to after: the
    dashboard holds each of them once, from its history (fetched from IB, or read from the
    server's recording) and its live stream together."""
    from ibstream.widgets import dashboard

    recording = {"record": str(tmp_path), "record_flush": 0.2,
                 "record_contracts": ("ES:bid_ask,last",)}  # fmt: skip
    options = recording if source == "store" else {}
    with threaded_server(**options) as server, Client(server.url) as watcher:
        truth = watcher.stream("ES", ("bid_ask", "last"))
        seen = [truth.get(WAIT)]
        first = seen[0]["ib_time"] + 1  # whole seconds from here on
        while seen[-1]["ib_time"] < first + 2:  # the market has a past
            seen.append(truth.get(WAIT))
        dash = dashboard("ES", server.url, history="1min", bar="1s")
        try:
            assert dash.history_ticks > 0 and dash.model.window == pd.Timedelta("5min")
            opened = seen[-1]["ib_time"]
            while seen[-1]["ib_time"] < opened + 3 or dash.ticks["ib_time"].max().timestamp() < (
                opened + 2
            ):
                seen.append(truth.get(WAIT))
            shown = dash.ticks
        finally:
            dash.close()
    end = opened + 2
    expected = frame_keys(ticks_to_frame(seen), first, end)
    assert sum(expected.values()) > 100
    assert frame_keys(shown, first, end) == expected  # none twice, none lost at the join
    assert dash.model.delta_since == shown.index[0].value  # the delta starts with the window
    assert dash.seam is not None and dash.seam.dropped > 0  # the two overlapped: it was tested
    sequences = shown["sequence"].to_numpy()
    if source == "store":  # the past came from the recording (live sequences), not from IB
        assert (sequences[: dash.history_ticks] > 0).mean() > 0.9
    else:
        assert (sequences[: dash.history_ticks] == 0).all()
