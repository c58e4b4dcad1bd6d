"""The simulator answers reqHistoricalTicks as IB does: pages equal what it sent live (an
ib_insync client subscribed meanwhile is the ground truth), whole seconds past 1,000 ticks,
IB's three pacing rules as error 162, and IB's refusals."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest
from ib_insync import IB, Contract

from ibstream.gateway import GatewaySimulator
from ibstream.ib.pacing import PACING_VIOLATION, Pacer, PacingRules
from tests.history_fixtures import ES, ES_ID, HOST, GroundTruth, rows_of

KINDS = ("TRADES", "BID_ASK", "MIDPOINT")


def utc(second: int) -> datetime:
    return datetime.fromtimestamp(second, UTC)


async def connect(sim: GatewaySimulator, client_id: int) -> IB:
    ib = IB()
    await ib.connectAsync(HOST, sim.port, clientId=client_id, timeout=5)
    return ib


def errors_of(ib: IB) -> list[tuple[int, int, str]]:
    seen: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda req_id, code, text, *_: seen.append((req_id, code, text))
    return seen


@pytest.fixture
async def live():
    """A simulator at 600 events/s with ground truth subscribed, and a second client."""
    async with GatewaySimulator(seed=3, rate=600, bursts=False) as sim:
        truth_ib, ib = await connect(sim, 1), await connect(sim, 2)
        truth = GroundTruth(truth_ib)
        await truth.subscribe()
        yield sim, truth, ib
        ib.disconnect()
        truth_ib.disconnect()


async def test_pages_equal_what_was_sent_live(live) -> None:
    sim, truth, ib = live
    first = end = truth.first_second
    await truth.until_second(end)
    while min(len(truth.window(kind, first, end + 1)) for kind in KINDS) < 300:
        end += 1  # a loaded machine may send fewer than 300 of a kind in 3 seconds
        await truth.until_second(end)
    for kind in KINDS:
        forward = rows_of(
            kind, await ib.reqHistoricalTicksAsync(ES, utc(first), "", 300, kind, False)
        )
        assert len(forward) >= 300
        assert forward == truth.window(kind, first, forward[-1][0] + 1)
        back = rows_of(kind, await ib.reqHistoricalTicksAsync(ES, "", utc(end), 300, kind, False))
        assert len(back) >= 300
        assert back == truth.window(kind, back[0][0], end + 1)
    assert sim.history_requests == 6 and sim.pacing_violations == 0


async def test_a_second_of_more_than_1000_trades_comes_whole(live) -> None:
    sim, truth, ib = live
    tape = sim.tape(ES_ID).series["TRADES"]

    def busiest() -> tuple[int, int]:
        return max(Counter(tape.times).items(), key=lambda kv: kv[1], default=(0, 0))

    sim.set_rate(5000, ES_ID)  # about 1,750 trades a second
    await sim.wait_for(lambda: busiest()[1] > 1000 and tape.times[-1] > busiest()[0])
    sim.set_rate(600, ES_ID)
    second, count = busiest()
    await truth.until_second(second)
    page = rows_of(
        "TRADES", await ib.reqHistoricalTicksAsync(ES, utc(second), "", 1000, "TRADES", False)
    )
    assert len(page) == count > 1000
    assert page == truth.window("TRADES", second, second + 1)


async def test_pacing_rules_each_draw_162() -> None:
    rules = PacingRules(identical_seconds=15, burst_count=6, burst_seconds=30, window_count=8)
    async with GatewaySimulator(seed=1, rate=200, bursts=False, history_pacing=rules) as sim:
        ib = await connect(sim, 1)
        errors = errors_of(ib)
        ib.reqTickByTickData(ES, "BidAsk", 0, False)
        now = int(datetime.now(UTC).timestamp())

        async def ask(offset: int, kind: str = "TRADES") -> list:
            return await ib.reqHistoricalTicksAsync(ES, utc(now - offset), "", 10, kind, False)

        await ask(0)
        await ask(0)  # identical within 15 s
        assert errors[-1][1:] == (162, PACING_VIOLATION)
        assert errors[-1][0] == ib.client._reqIdSeq - 1  # with the request id
        for offset in range(1, 6):  # 6 TRADES requests answered so far: the 7th is refused
            await ask(offset)
        assert len(errors) == 1
        await ask(6)
        assert len(errors) == 2 and errors[-1][1:] == (162, PACING_VIOLATION)
        await ask(0, "BID_ASK")  # another tick type has its own 6, but all count to 8
        await ask(0, "MIDPOINT")
        assert len(errors) == 2
        await ask(1, "MIDPOINT")  # the 9th in the window
        assert len(errors) == 3 and errors[-1][1:] == (162, PACING_VIOLATION)
        assert (sim.history_requests, sim.pacing_violations) == (8, 3)
        ib.disconnect()


async def test_refusals_as_ib_words_them() -> None:
    async with GatewaySimulator(
        seed=1, rate=2000, bursts=False, no_permission=("NQ",), history_limit=100
    ) as sim:
        ib = await connect(sim, 1)
        errors = errors_of(ib)
        now = utc(int(datetime.now(UTC).timestamp()))
        nq = Contract(symbol="NQ", secType="FUT", exchange="CME", lastTradeDateOrContractMonth="")
        nq_id = next(
            c.con_id for c in sim.contracts if c.symbol == "NQ" and not c.expired(sim.session_date)
        )
        assert (
            await ib.reqHistoricalTicksAsync(
                Contract(conId=nq_id, exchange="CME"), now, "", 10, "TRADES", False
            )
            == []
        )
        assert errors[-1][1] == 162 and "No market data permissions for CME FUT" in errors[-1][2]
        assert await ib.reqHistoricalTicksAsync(ES, now, now, 10, "TRADES", False) == []
        assert errors[-1][1] == 321 and "exactly one of" in errors[-1][2]
        assert await ib.reqHistoricalTicksAsync(ES, now, "", 1001, "TRADES", False) == []
        assert errors[-1][1] == 321 and "numberOfTicks" in errors[-1][2]
        assert await ib.reqHistoricalTicksAsync(ES, now, "", 10, "BARS", False) == []
        assert errors[-1][1] == 321 and "whatToShow" in errors[-1][2]
        ib.reqTickByTickData(ES, "AllLast", 0, False)  # the market runs past the 100 kept
        tape = sim.tape(ES_ID).series["TRADES"]
        await sim.wait_for(lambda: tape.horizon is not None)
        old = utc(tape.times[0] - 5)
        assert await ib.reqHistoricalTicksAsync(ES, old, "", 10, "TRADES", False) == []
        assert errors[-1][1:] == (162, sim.error_message(162))  # HMDS query returned no data
        assert sim.history_requests == 1 and nq is not None
        ib.disconnect()


async def test_forced_failure_is_sent_with_the_request_id(live) -> None:
    sim, truth, ib = live
    errors = errors_of(ib)
    sim.fail_next("historical_ticks", 162, PACING_VIOLATION)
    await asyncio.wait_for(
        ib.reqHistoricalTicksAsync(ES, utc(truth.first_second), "", 10, "TRADES", False), 5
    )
    assert errors[-1][1:] == (162, PACING_VIOLATION)


async def test_history_holds_what_a_connectivity_loss_kept_from_live(live) -> None:
    """During a 1100 nothing is sent live, but the market trades on and history has it."""
    sim, truth, ib = live
    await truth.until_second(truth.first_second)
    sim.send_error(1100)
    paused_at = len(sim.tape(ES_ID).series["TRADES"].times)
    await sim.wait_for(lambda: len(sim.tape(ES_ID).series["TRADES"].times) > paused_at + 500)
    sim.send_error(1102)
    await truth.drained()
    lost_second = sim.tape(ES_ID).series["TRADES"].times[paused_at + 250]
    page = rows_of(
        "TRADES", await ib.reqHistoricalTicksAsync(ES, utc(lost_second), "", 100, "TRADES", False)
    )
    assert page and page[0][0] == lost_second
    assert not set(page) & set(truth.rows["TRADES"])  # none of them reached the live client


async def test_use_rth_keeps_regular_hours_only(live) -> None:
    sim, truth, ib = live
    first = end = truth.first_second
    await truth.until_second(end)
    while len(truth.window("TRADES", first, end + 1)) < 200:
        end += 1
        await truth.until_second(end)
    page = await ib.reqHistoricalTicksAsync(ES, utc(first), "", 200, "TRADES", True)
    chicago = ZoneInfo("America/Chicago")

    def regular(second: int) -> bool:  # CME equity futures: 08:30-15:00 Chicago, weekdays
        local = utc(second).astimezone(chicago)
        return local.weekday() < 5 and time(8, 30) <= local.time() < time(15)

    rows = rows_of("TRADES", page)
    expected = [r for r in truth.window("TRADES", first, end + 1) if regular(r[0])]
    assert rows == expected[: len(rows)]
    assert len(rows) >= min(200, len(expected))
    if rows:  # a page ends with the whole of its last second
        assert len(rows) == len(expected) or expected[len(rows)][0] > rows[-1][0]
    tape = sim.tape(ES_ID)  # whichever side of the hours the test runs on, both are right
    monday = datetime(2026, 12, 7, tzinfo=chicago)
    for hour, minute, day, inside in ((8, 29, 0, False), (8, 30, 0, True), (14, 59, 0, True),
                                      (15, 0, 0, False), (10, 0, 5, False)):  # fmt: skip
        second = int(monday.replace(day=7 + day, hour=hour, minute=minute).timestamp())
        assert tape.regular_hours(second) is inside and regular(second) is inside


def test_history_arguments_are_checked() -> None:
    for bad in (-1, 1.5, "10"):
        with pytest.raises(ValueError, match="history_limit"):
            GatewaySimulator(history_limit=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="burst_count"):
        PacingRules(burst_count=0)
    with pytest.raises(ValueError, match="window_seconds"):
        PacingRules(window_seconds=-1)
    with pytest.raises(ValueError, match="retries"):
        Pacer(retries=-1)
    with pytest.raises(ValueError, match="backoff_seconds"):
        Pacer(backoff_seconds=0)
    with pytest.raises(ValueError, match="margin"):
        Pacer(margin=float("nan"))


async def test_a_past_made_at_once_is_the_market_history_answers_from() -> None:
    """`make_past` (benches' long past): the market's own events, in the order and with the
    prices it would have sent live, stamped over the seconds before now; then answered."""
    from ibstream.gateway.market import Market, Trade

    async with GatewaySimulator(seed=5, rate=500, bursts=False) as sim:
        now = int(datetime.now(UTC).timestamp())
        made = sim.make_past(20, [ES_ID])
        assert 9_900 <= made <= 10_000  # 500 events/s for 20 s, in 5 ms batches
        tape = sim.tape(ES_ID).series["TRADES"]
        assert now - 21 <= tape.times[0] and tape.times[-1] <= now + 1
        assert tape.times == sorted(tape.times) and len(set(tape.times)) >= 20
        contract = next(c for c in sim.contracts if c.con_id == ES_ID)
        again = [
            e for e in Market(contract, 5, 500, bursts=False).step(made) if isinstance(e, Trade)
        ]
        assert [(t.price, t.size) for t in tape.rows] == [(t.price, t.size) for t in again]
        ib = await connect(sim, 7)
        try:
            ticks = await ib.reqHistoricalTicksAsync(ES, utc(now - 30), "", 1000, "TRADES", False)
            assert rows_of("TRADES", ticks)[:5] == [
                (s, t.price, t.size, t.exchange, t.conditions)
                for s, t in list(zip(tape.times, tape.rows, strict=True))[:5]
            ]
            ib.reqTickByTickData(ES, "AllLast", 0, False)
            await ib.reqCurrentTimeAsync()
            with pytest.raises(RuntimeError, match="before the feed's first subscription"):
                sim.make_past(1, [ES_ID])
        finally:
            ib.disconnect()
