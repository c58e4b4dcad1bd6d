"""The simulator's calendar: today by default (the front month rolls), pinned on request."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, date, datetime

import pytest

from ibstream.gateway import SESSION_DATE, GatewaySimulator
from ibstream.gateway.contracts import SESSION_DATE_ENV, builtin_contracts, session_date_of

ROOTS = ("ES", "MNQ", "NQ", "CL", "GC")


def futures(day: date, symbol: str) -> list:
    return [c for c in builtin_contracts(day) if c.symbol == symbol and c.sec_type == "FUT"]


def test_default_day_is_today_unless_pinned(monkeypatch):
    monkeypatch.delenv(SESSION_DATE_ENV, raising=False)
    today = datetime.now(UTC).date()
    sim = GatewaySimulator(port=0)
    assert sim.session_date == today and sim.contracts == builtin_contracts(today)
    monkeypatch.setenv(SESSION_DATE_ENV, "2027-01-04")
    assert GatewaySimulator(port=0).session_date == date(2027, 1, 4)
    assert GatewaySimulator(port=0, session_date=SESSION_DATE).session_date == SESSION_DATE
    with pytest.raises(ValueError, match="'2027-13-01' is not a date of the form YYYY-MM-DD"):
        session_date_of("2027-13-01")


@pytest.mark.parametrize("day", [date(2026, 11, 25), date(2026, 12, 19), date(2031, 5, 5)])
def test_every_day_has_one_expired_and_three_live_expiries_per_root(day):
    stamp = day.strftime("%Y%m%d")
    for symbol in ROOTS:
        rows = futures(day, symbol)
        lasts = [c.last_trade_date for c in rows]
        assert lasts == sorted(lasts) and len(rows) == 4, (symbol, lasts)
        assert lasts[0] < stamp <= lasts[1], (symbol, day, lasts)
        assert len({c.con_id for c in rows}) == 4


def test_the_front_month_rolls_and_known_expiries_keep_ibs_con_ids():
    assert futures(date(2026, 12, 18), "ES")[1].local_symbol == "ESZ6"  # its last trading day
    after = futures(date(2026, 12, 19), "ES")
    assert [c.local_symbol for c in after] == ["ESZ6", "ESH7", "ESM7", "ESU7"]
    assert (after[0].con_id, after[1].con_id) == (637533641, 649180695)
    later = futures(date(2031, 5, 5), "ES")
    assert [(c.local_symbol, c.last_trade_date) for c in later[1:]] == [
        ("ESM1", "20310620"),  # third Fridays
        ("ESU1", "20310919"),
        ("ESZ1", "20311219"),
    ]
    assert later == futures(date(2031, 5, 5), "ES")  # made-up conIds are stable
    spread = next(c for c in builtin_contracts(date(2031, 5, 5)) if c.symbol == "CLS")
    assert not spread.expired(date(2031, 5, 5))  # the negative-price spread keeps trading


def test_demo_follows_the_session_date_option():
    env = {k: v for k, v in __import__("os").environ.items() if k != SESSION_DATE_ENV}
    command = [sys.executable, "-m", "ibstream.cli", "demo", "--seconds", "0.5", "--json"]
    done = subprocess.run(
        [*command, "--quiet", "--session-date", "2026-12-21"],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    stream = next(json.loads(line) for line in done.stdout.splitlines() if '"stream"' in line)
    assert "ESH7" in json.dumps(stream["contract"]), stream
    bad = subprocess.run([*command, "--session-date", "21.12.2026"], capture_output=True, text=True)
    assert bad.returncode == 2 and "expected a date YYYY-MM-DD, got '21.12.2026'" in bad.stderr
