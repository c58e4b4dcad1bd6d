"""`fetch_ticks` against the simulator over TCP: several pages equal what the simulator sent
live (an ib_insync client subscribed meanwhile), a second of more than 1,000 trades included,
without repeats or losses; the pacer keeps IB's rules by waiting; a 162 is retried; IB's
refusals and bad arguments are clear errors."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import ib_async
import pytest
from ib_insync import IB, Contract

from ibstream.errors import ErrorCode, StreamError
from ibstream.gateway import GatewaySimulator
from ibstream.gateway.recorded import load_recording
from ibstream.ib.history import fetch_ticks
from ibstream.ib.pacing import PACING_VIOLATION, Pacer, PacingRules
from tests.history_fixtures import ES, ES_ID, HOST, GroundTruth
from tests.test_gateway_replay import ESU4, SPEED, record_sample

KINDS = ("TRADES", "BID_ASK", "MIDPOINT")
FAST = PacingRules().scaled(0.01)  # IB's rules a hundred times faster


def pacer(rules: PacingRules = FAST, **kw: object) -> Pacer:
    return Pacer(rules, margin=0.02, backoff_seconds=0.01, **kw)  # type: ignore[arg-type]


def rows(table) -> list[tuple]:
    return list(zip(*(table.column(i).to_pylist() for i in range(table.num_columns)), strict=True))


@pytest.fixture
async def recorded():
    """A simulator whose ES traded more than 1,000 times in one second, the ground truth of
    it, a second client, and the range [first, end) that holds that second."""
    async with GatewaySimulator(seed=5, rate=3000, bursts=False, history_pacing=FAST) as sim:
        truth_ib, ib = IB(), IB()
        await truth_ib.connectAsync(HOST, sim.port, clientId=1, timeout=5)
        await ib.connectAsync(HOST, sim.port, clientId=2, timeout=5)
        truth = GroundTruth(truth_ib)
        await truth.subscribe()
        tape = sim.tape(ES_ID).series["TRADES"]

        def busiest() -> tuple[int, int]:
            counts = Counter(t for t in tape.times if t >= truth.first_second)
            return max(counts.items(), key=lambda kv: kv[1], default=(0, 0))

        await truth.until_second(truth.first_second + 1)
        sim.set_rate(6000, ES_ID)
        await sim.wait_for(lambda: busiest()[1] > 1000 and tape.times[-1] > busiest()[0])
        sim.set_rate(3000, ES_ID)
        busy = busiest()[0]
        end = busy + 2
        await truth.until_second(end)
        yield sim, truth, ib, truth.first_second, end, busy
        ib.disconnect()
        truth_ib.disconnect()


async def test_pages_join_into_the_ground_truth(recorded) -> None:
    sim, truth, ib, start, end, busy = recorded
    shared = pacer()
    for kind in KINDS:
        table = await fetch_ticks(ib, ES, kind, start, end, pacer=shared)
        got = rows(table)
        assert got == truth.window(kind, start, end)  # no repeat, no loss, in order
        requests = int(table.schema.metadata[b"requests"])
        assert 1 < requests <= len(got) // 1000 + 2  # every page but the last brings 1,000 new
    trades = [r[0] for r in rows(await fetch_ticks(ib, ES, "TRADES", busy, busy + 1, pacer=shared))]
    assert len(trades) > 1000 and set(trades) == {busy}
    assert sim.pacing_violations == 0 and shared.violations == 0
    assert shared.requests == sim.history_requests


async def test_ib_async_fetches_the_same(recorded) -> None:
    sim, truth, _, start, end, _ = recorded
    ib = ib_async.IB()
    await ib.connectAsync(HOST, sim.port, clientId=3, timeout=5)
    ib.RaiseRequestErrors = True  # a refusal raises in the library: still a retried 162
    sim.fail_next("historical_ticks", 162, PACING_VIOLATION)
    shared = pacer()
    es = ib_async.Contract(conId=ES_ID, exchange="CME")
    table = await fetch_ticks(ib, es, "TRADES", start, end, pacer=shared)
    assert rows(table) == truth.window("TRADES", start, end)
    assert shared.violations == 1
    ib.disconnect()


async def test_the_pacer_waits_instead_of_tripping_the_rules(recorded) -> None:
    sim, truth, ib, start, end, _ = recorded
    strict = PacingRules(
        identical_seconds=0.5, burst_count=2, burst_seconds=0.2, window_count=4, window_seconds=0.6
    )
    sim.pacing.rules = strict
    shared = pacer(strict)
    sent: list[tuple[float, object, object]] = []  # (when, request, kind) as the pacer let go
    count = shared.log.add

    def add(request: object, kind: object, now: float) -> None:
        sent.append((now, request, kind))
        count(request, kind, now)

    shared.log.add = add  # type: ignore[method-assign]
    seen: list[tuple[int, int]] = []
    quotes, mids = await asyncio.gather(
        fetch_ticks(
            ib, ES, "BID_ASK", start, end, pacer=shared, progress=lambda *a: seen.append(a)
        ),
        fetch_ticks(ib, ES, "MIDPOINT", start, end, pacer=shared),
    )
    assert rows(quotes) == truth.window("BID_ASK", start, end)
    assert rows(mids) == truth.window("MIDPOINT", start, end)
    assert shared.requests == len(sent) > strict.window_count  # more than a window's worth
    # every request the pacer let go kept the three rules on its clock (with its margin); the
    # simulator counts on arrival, which a loaded machine can bunch up: any 162 it sent was
    # retried, and the answers above are whole all the same
    for i, (now, request, kind) in enumerate(sent):
        earlier = [(t, r, k) for t, r, k in sent[:i]]
        since = now - shared.margin
        assert all(r != request or t <= since - strict.identical_seconds for t, r, _ in earlier)
        assert sum(k == kind and t > since - strict.burst_seconds for t, _, k in earlier) < 2
        assert sum(t > since - strict.window_seconds for t, _, _ in earlier) < 4
    assert sim.pacing_violations == shared.violations
    assert seen[-1] == (end - start, end - start)
    assert [s for s, _ in seen] == sorted(s for s, _ in seen)


async def test_a_pacing_violation_is_retried(recorded) -> None:
    sim, truth, ib, start, end, _ = recorded
    sim.fail_next("historical_ticks", 162, PACING_VIOLATION)
    sim.fail_next("historical_ticks", 162, PACING_VIOLATION)
    shared = pacer()
    table = await fetch_ticks(ib, ES, "TRADES", start, end, pacer=shared)
    assert rows(table) == truth.window("TRADES", start, end)
    assert shared.violations == 2
    assert shared.requests == int(table.schema.metadata[b"requests"]) + 2


async def test_repeated_violations_end_as_rate_limit(recorded) -> None:
    sim, truth, ib, start, end, _ = recorded
    for _ in range(3):
        sim.fail_next("historical_ticks", 162, PACING_VIOLATION)
    with pytest.raises(StreamError) as caught:
        await fetch_ticks(ib, ES, "TRADES", start, end, pacer=pacer(retries=2))
    assert caught.value.code == ErrorCode.RATE_LIMIT_EXCEEDED
    assert caught.value.details["ib_code"] == 162


async def test_bad_arguments_name_the_field() -> None:
    now = int(time.time())
    cases = [
        (("TRADES", now - 10, now - 20), "start"),
        (("TRADES", now - 10, now - 10), "start"),
        (("TRADES", now - 10, now + 60), "end"),
        (("BARS", now - 20, now - 10), "what"),
        (("TRADES", float(now - 20), now - 10), "start"),
    ]
    for (what, start, end), field in cases:
        with pytest.raises(StreamError) as caught:
            await fetch_ticks(None, ES, what, start, end)  # refused before any request
        assert caught.value.code == ErrorCode.INVALID_MESSAGE
        assert caught.value.details["field"] == field and field in caught.value.message


async def test_ib_refusals_carry_ibs_code_and_text() -> None:
    async with GatewaySimulator(
        seed=2, rate=2000, bursts=False, no_permission=("NQ",), history_limit=200
    ) as sim:
        ib = IB()
        await ib.connectAsync(HOST, sim.port, clientId=1, timeout=5)
        now = int(time.time())
        nq_id = next(
            c.con_id for c in sim.contracts if c.symbol == "NQ" and not c.expired(sim.session_date)
        )
        with pytest.raises(StreamError) as caught:
            await fetch_ticks(ib, Contract(conId=nq_id, exchange="CME"), "TRADES", now - 5, now)
        assert caught.value.code == ErrorCode.PERMISSION_DENIED
        assert caught.value.details["ib_code"] == 162
        assert "No market data permissions" in caught.value.details["ib_message"]
        ib.reqTickByTickData(ES, "AllLast", 0, False)  # the market runs past the 200 kept
        tape = sim.tape(ES_ID).series["TRADES"]
        await sim.wait_for(lambda: tape.horizon is not None)
        with pytest.raises(StreamError) as caught:
            await fetch_ticks(ib, ES, "TRADES", tape.times[0] - 5, tape.times[-1], pacer=pacer())
        assert caught.value.code == ErrorCode.STREAM_NOT_FOUND
        assert caught.value.details["ib_code"] == 162
        assert "no data" in caught.value.message and caught.value.partial.num_rows == 0
        ib.disconnect()


async def test_a_replayed_recording_is_its_own_history(tmp_path) -> None:
    """`gateway --replay`: the recorded session's trades and quotes, as sent live, come back
    from history (IB's time is the recording's)."""
    record_sample(tmp_path / "store")
    replay = load_recording(tmp_path / "store", speed=SPEED, held=True)
    async with GatewaySimulator(replay=replay, history_pacing=FAST) as sim:
        truth_ib, ib = IB(), IB()
        await truth_ib.connectAsync(HOST, sim.port, clientId=1, timeout=5)
        await ib.connectAsync(HOST, sim.port, clientId=2, timeout=5)
        truth = GroundTruth(truth_ib)
        esu4 = Contract(conId=ESU4.contract_id, exchange="CME")
        await truth.subscribe(esu4, ("Last", "BidAsk"))
        replay.clock.release()
        await sim.wait_for(lambda: (replay.clock.position() or (0, 0))[1] > replay.clock.last_ns)
        await truth.drained()
        first, last = truth.rows["BID_ASK"][0][0], truth.rows["BID_ASK"][-1][0]
        assert len(truth.rows["BID_ASK"]) > 1000 and truth.rows["TRADES"]  # pages of quotes
        shared = pacer()
        for kind in ("TRADES", "BID_ASK"):
            table = await fetch_ticks(ib, esu4, kind, first, last + 1, pacer=shared)
            assert rows(table) == truth.window(kind, first, last + 1)
        assert sim.pacing_violations == 0
        ib.disconnect()
        truth_ib.disconnect()
