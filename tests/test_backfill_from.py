"""`--backfill-from HH:MM`: a `--record-contract` stream's day before it first started is a
`before_start` gap, filled from IB's history one for one against ground truth, once a day.

The simulator keeps its past from when its market first ran (the ground-truth client's
subscription): HH:MM is the minute that was under way then, in ES's exchange time zone
(US/Central, from the contract details), so the gap reaches back before anything was traded.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import ibstream.store
from ibstream.model import ContractInfo, Tick, TickType
from ibstream.server.config import ConfigError, read_config, read_env, resolve
from ibstream.store import before_start, fill, gaps, layout, parts
from tests.client_fixtures import ServerProcess
from tests.conftest import get_json
from tests.history_fixtures import ES_ID
from tests.test_backfill import OPTIONS, check_against_truth, recorded_market

CENTRAL = ZoneInfo("US/Central")  # ES's time zone in the simulator's contract details
NS = 1_000_000_000


def clock_of(moment: datetime) -> str:
    return f"{moment:%H:%M}"


async def outside_the_days_end(minutes: int = 2) -> None:
    """Within `minutes` of the exchange's midnight, wait for the new day (an HH:MM that
    close to it would name yesterday's or tomorrow's): the wall clock is what is awaited."""
    now = datetime.now(CENTRAL)
    if (now + timedelta(minutes=minutes)).date() != now.date():
        midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), CENTRAL)
        await asyncio.sleep((midnight - now).total_seconds() + 1)


@pytest.mark.timeout(300)  # may wait out the exchange's midnight first
async def test_the_day_before_start_is_filled_once_one_for_one(tmp_path: Path):
    store = tmp_path / "store"
    await outside_the_days_end()
    async with recorded_market(21) as (gateway, truth, _):
        began = datetime.now(CENTRAL)  # the market's past starts about now
        since = int(began.replace(second=0, microsecond=0).timestamp())
        options = ["--record", str(store), *OPTIONS, "--backfill-from", clock_of(began)]
        server = ServerProcess(gateway.port)
        try:
            await truth.until_second(int(time.time()) + 3)  # 3 s traded before the server
            await server.start(*options)
            lines = await server.wait_log("backfill: gap", "before_start", count=2, timeout=60)
            assert all("filled" in x and "partly" not in x for x in lines), lines
            _, health = await get_json(server, "/health")  # type: ignore[arg-type]
            assert health["recording"]["backfill_from"] == {
                "from": clock_of(began),
                "problems": [],
            }
            await truth.until_second(int(time.time()) + 1)
            assert await server.terminate() == 0
            # every tick from HH:MM on (the ground truth holds them from its first whole second)
            start = max(since, truth.first_second)
            check_against_truth(store, truth, "before_start", 1, since=start)
            asked = gateway.history_requests
            assert asked > 0
            # the same day again: the gap is on record, IB is not asked again
            await server.start(*options)
            await server.wait_log("not asked again", count=2)
            await truth.until_second(int(time.time()) + 1)
            assert await server.terminate() == 0
            assert gateway.history_requests == asked
        finally:
            await server.kill()
    rows = ibstream.store.open(store).gaps()
    mine = rows[rows["reason"] == "before_start"]
    assert len(mine) == 2, rows  # one per stream, not one per run
    assert {s.value // NS for s in mine["start"]} == {since}, mine


@pytest.mark.timeout(300)  # may wait out the exchange's midnight first
async def test_a_time_after_the_streams_start_is_refused_clearly(tmp_path: Path):
    store = tmp_path / "store"
    await outside_the_days_end()
    later = datetime.now(CENTRAL) + timedelta(minutes=2)
    async with recorded_market(22) as (gateway, _, _):
        server = ServerProcess(gateway.port)
        try:
            await server.start("--record", str(store), *OPTIONS, "--backfill-from", clock_of(later))
            (line,) = await server.wait_log("--backfill-from", "is not before the stream")
            assert "ERROR" in line and "US/Central" in line and "give an earlier time" in line
            _, health = await get_json(server, "/health")  # type: ignore[arg-type]
            problems = health["recording"]["backfill_from"]["problems"]
            assert len(problems) == 2 and all(clock_of(later) in p for p in problems), problems
            assert await server.terminate() == 0
        finally:
            await server.kill()
    assert gateway.history_requests == 0
    assert ibstream.store.open(store).gaps().empty


def test_the_gap_runs_from_hh_mm_in_the_exchange_zone_to_the_first_tick_that_day(
    tmp_path: Path,
):
    root = layout.open_root(tmp_path)
    started = int(datetime(2026, 11, 25, 15, 0, tzinfo=UTC).timestamp()) * NS  # 09:00 Central
    half_past_eight = datetime(2026, 11, 25, 8, 30).time()

    def gap(zone: object, at: int = started) -> dict | None:
        return before_start.gap_for(root, ES_ID, "last", half_past_eight, zone, at, "s1")  # type: ignore[arg-type]

    # a first run's store has the gap before any tick: the backfill waits, it does not fail
    assert fill.resumed_at(root, ES_ID, "last", started) is None
    assert fill.stored_keys(root, ES_ID, "last", 0, 10, 0) == (Counter(), Counter())
    central = gap(before_start.zone_of("US/Central"))
    assert central is not None and central["reason"] == "before_start"
    assert (central["start"], central["end"]) == (started - 30 * 60 * NS, started)
    assert central["status"] == "open" and "08:30 US/Central" in central["message"]
    utc = gap(before_start.zone_of("Not/AZone"))  # unknown zone: UTC
    assert utc is not None and utc["start"] == started - (15 * 60 - 8 * 60 - 30) * 60 * NS
    with pytest.raises(before_start.BackfillFromError, match="not before the stream"):
        gap(before_start.zone_of("US/Central"), started - 31 * 60 * NS)  # started 08:29
    # a run earlier that day recorded from 08:45: the gap ends at its first tick
    contract = ContractInfo(ES_ID, "ES", "FUT", "CME", "USD")
    first = started - 15 * 60 * NS
    ticks = [Tick(ES_ID, TickType.LAST, first + i * NS, price=1.0, size=1) for i in range(3)]
    for part in parts.build_parts(contract, "last", ticks, [1, 2, 3], "s0"):
        parts.write_part(root, part, "s0", contract.to_dict())
    earlier = gap(before_start.zone_of("US/Central"))
    assert earlier is not None and earlier["end"] == first
    # once that day's gap is on record: none again, whatever the time of the restart
    gaps.write(root, "s1", [earlier])
    assert gap(before_start.zone_of("US/Central"), started + 3600 * NS) is None
    next_day = started + 24 * 3600 * NS
    assert gap(before_start.zone_of("US/Central"), next_day) is not None


@pytest.mark.parametrize("text", ["25:00", "9am", "12:60", "", "8:5"])
def test_a_bad_backfill_from_is_one_line_naming_the_option(text: str, tmp_path: Path):
    store = str(tmp_path / "s")
    done = subprocess.run(
        [sys.executable, "-m", "ibstream", "serve", "--record", store, "--backfill-from", text],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "--backfill-from" in done.stderr and "HH:MM" in done.stderr, done.stderr
    with pytest.raises(ConfigError, match="IBSTREAM_BACKFILL_FROM.*HH:MM"):
        read_env({"IBSTREAM_BACKFILL_FROM": text or " x"})
    config = tmp_path / "c.toml"
    config.write_text(f'backfill_from = "{text or "x"}"\n')
    with pytest.raises(ConfigError, match="backfill_from.*HH:MM"):
        read_config(config)


def test_backfill_from_needs_a_kept_stream_and_reaches_the_server_command_line(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-m", "ibstream", "serve", "--record", str(tmp_path), "--backfill-from",
         "08:30", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip
    assert done.returncode == 1 and "--record-contract" in done.stderr, done.stderr
    options = resolve(
        {"record": str(tmp_path), "record_contract": "ES"}, {"IBSTREAM_BACKFILL_FROM": "8:30"}
    )
    argv = options.serve_argv()
    assert argv[argv.index("--backfill-from") + 1] == "8:30"
