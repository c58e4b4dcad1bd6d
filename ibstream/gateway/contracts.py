"""The contracts the gateway simulator knows: those the README names, futures with several
expiries (one already expired) so that picking the front month is exercised, and a calendar
spread whose price goes negative.

The simulator lives on a session day: today by default (the front month rolls with the
calendar), or a pinned one (`session_date=`, `--session-date`, `$IBSTREAM_SESSION_DATE`), as
the tests pin `SESSION_DATE` so that the front month they expect never changes.
`builtin_contracts(day)` holds each future root's last expired expiry and the next three on
that day. Contract ids of AAPL, EUR.USD and the expiries of the table below are IB's.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from types import MappingProxyType

from ibstream.gateway.instrument import SimContract, match_contracts

__all__ = [
    "BUILTIN_BY_CON_ID",
    "BUILTIN_CONTRACTS",
    "SESSION_DATE",
    "SESSION_DATE_ENV",
    "SimContract",
    "builtin_contracts",
    "session_date_of",
    "match_contracts",
]

SESSION_DATE = date(2026, 11, 25)  # the day the tests pin
SESSION_DATE_ENV = "IBSTREAM_SESSION_DATE"
_FUT_HOURS = "{p}:1700-{d}:1600;{d}:1700-{n}:1600"
_FX_HOURS = "{p}:1715-{d}:1700;{d}:1715-{n}:1700"

AAPL = SimContract(
    con_id=265598, symbol="AAPL", sec_type="STK", exchange="SMART", primary_exchange="NASDAQ",
    currency="USD", local_symbol="AAPL", trading_class="NMS", last_trade_date="", multiplier="",
    min_tick=0.01, long_name="APPLE INC", start_price=230.0, trade_size=100, quote_size=400,
    venues=("NASDAQ", "ARCA", "BATS", "EDGX", "IEX", "FINRA"), market_name="NMS",
    valid_exchanges="SMART,AMEX,NYSE,BATS,ARCA,NASDAQ,IEX,EDGX", industry="Technology",
    category="Computers", subcategory="Computers", stock_type="COMMON",
    market_rule_ids="26,26,26,26,26,26,26,26",
)  # fmt: skip

EURUSD = SimContract(
    con_id=12087792, symbol="EUR", sec_type="CASH", exchange="IDEALPRO", primary_exchange="",
    currency="USD", local_symbol="EUR.USD", trading_class="EUR.USD", last_trade_date="",
    multiplier="", min_tick=0.00005, long_name="European Monetary Union Euro", start_price=1.08,
    trade_size=100_000, quote_size=1_000_000, size_increment=1000, venues=("IDEALPRO",),
    reports_trades=False, market_name="EUR.USD", valid_exchanges="IDEALPRO",
    trading_hours=_FX_HOURS, market_rule_ids="239",
)  # fmt: skip


def _root(symbol: str, exchange: str, name: str, price: float, tick: float, mult: str,
          trade: float, quote: float, under: tuple[int, str]) -> SimContract:  # fmt: skip
    return SimContract(
        con_id=0, symbol=symbol, sec_type="FUT", exchange=exchange, primary_exchange=exchange,
        currency="USD", local_symbol="", trading_class=symbol, last_trade_date="",
        multiplier=mult, min_tick=tick, long_name=name, start_price=price, trade_size=trade,
        quote_size=quote, venues=(exchange,), market_name=symbol,
        valid_exchanges=f"{exchange},QBALGO", time_zone_id="US/Central",
        trading_hours=_FUT_HOURS, market_rule_ids="67,67", under_con_id=under[0],
        under_symbol=under[1], under_sec_type="IND" if under[0] else "",
    )  # fmt: skip


_ROOTS = {
    "ES": _root("ES", "CME", "E-mini S&P 500", 5900.0, 0.25, "50", 3, 40, (11004968, "ES")),
    "MNQ": _root(
        "MNQ",
        "CME",
        "Micro E-Mini Nasdaq-100 Index",
        21000.0,
        0.25,
        "2",
        2,
        12,
        (362687422, "NQ"),
    ),  # fmt: skip
    "NQ": _root("NQ", "CME", "E-mini Nasdaq-100", 21000.0, 0.25, "20", 2, 10, (362687422, "NQ")),
    "CL": _root("CL", "NYMEX", "Light Sweet Crude Oil", 70.0, 0.01, "1000", 2, 15, (0, "")),
    "GC": _root("GC", "COMEX", "Gold", 2650.0, 0.1, "100", 1, 6, (0, "")),
}
_MONTH_CODES = dict(zip("FGHJKMNQUVXZ", range(1, 13), strict=True))

# (conId, local symbol, last trading day) per root; the first of each is already expired
_EXPIRIES = {
    "ES": [(568550526, "ESU6", "20260918"), (637533641, "ESZ6", "20261218"),
           (649180695, "ESH7", "20270319"), (661105020, "ESM7", "20270618")],
    "MNQ": [(654503301, "MNQU6", "20260918"), (654503320, "MNQZ6", "20261218"),
            (672387468, "MNQH7", "20270319"), (684380203, "MNQM7", "20270618")],
    "NQ": [(568549458, "NQU6", "20260918"), (637533450, "NQZ6", "20261218"),
           (649180678, "NQH7", "20270319"), (661104996, "NQM7", "20270618")],
    "CL": [(215465482, "CLZ6", "20261119"), (215465490, "CLF7", "20261217"),
           (215465496, "CLG7", "20270120"), (215465504, "CLH7", "20270220")],
    "GC": [(235938380, "GCV6", "20261028"), (235938399, "GCZ6", "20261229"),
           (235938408, "GCG7", "20270224"), (235938417, "GCJ7", "20270428")],
}  # fmt: skip


def _future(
    root: SimContract, con_id: int, local: str, last: str, step: int, year: int | None = None
) -> SimContract:
    """One expiry of a root; the front month (step 1) trades at the root's price, later ones
    a little higher (carry)."""
    month = _MONTH_CODES[local[-2]]
    year = year or 2020 + int(local[-1])
    return replace(
        root, con_id=con_id, local_symbol=local, last_trade_date=last,
        contract_month=f"{year}{month:02d}",
        start_price=root.price(root.to_ticks(root.start_price * (1 + 0.004 * (step - 1)))),
    )  # fmt: skip


FUTURES: tuple[SimContract, ...] = tuple(
    _future(_ROOTS[symbol], *row, step)
    for symbol, rows in _EXPIRIES.items()
    for step, row in enumerate(rows)
)
# a crude oil calendar spread traded as one instrument: its price (front minus next month)
# walks around zero and below, as spreads and CL in April 2020 do
CL_SPREAD = replace(
    _ROOTS["CL"], con_id=215470001, symbol="CLS", local_symbol="CLSF8G8", trading_class="CLS",
    last_trade_date="20271216", contract_month="202801", market_name="CLS",
    long_name="Crude Oil calendar spread Jan/Feb 2028 (simulated)", start_price=-0.02,
    lowest_bid=None,
)  # fmt: skip
BUILTIN_CONTRACTS: tuple[SimContract, ...] = (AAPL, EURUSD, *FUTURES, CL_SPREAD)
BUILTIN_BY_CON_ID: Mapping[int, SimContract] = MappingProxyType(
    {c.con_id: c for c in BUILTIN_CONTRACTS}
)


# Expiry cycles for days outside the table above: contract months and last trading days
_CYCLES = {"ES": "HMUZ", "MNQ": "HMUZ", "NQ": "HMUZ", "CL": "FGHJKMNQUVXZ", "GC": "GJMQVZ"}
_KNOWN_IDS = {
    (local, last[:4]): con_id for rows in _EXPIRIES.values() for con_id, local, last in rows
}


def builtin_contracts(session_date: date) -> tuple[SimContract, ...]:
    """The built-in contracts on `session_date`: for each future root the last expired expiry
    and the next three, so the front month rolls with the calendar. Expiries in the table
    above keep IB's conIds; others get stable made-up ones."""
    if session_date == SESSION_DATE:
        return BUILTIN_CONTRACTS
    others = tuple(
        _not_expired(c, session_date)
        for c in BUILTIN_CONTRACTS
        if c.symbol not in _CYCLES or c.sec_type != "FUT"
    )
    futures = []
    for symbol, cycle in _CYCLES.items():
        expiries = sorted(
            (_last_trade_day(symbol, year, month), year, month)
            for year in range(session_date.year - 1, session_date.year + 3)
            for month in (_MONTH_CODES[code] for code in cycle)
        )
        live = next(i for i, row in enumerate(expiries) if row[0] >= session_date)
        for step, (last, year, month) in enumerate(expiries[live - 1 : live + 3]):
            code = next(c for c, m in _MONTH_CODES.items() if m == month)
            local = f"{symbol}{code}{year % 10}"
            stamp = last.strftime("%Y%m%d")
            con_id = _KNOWN_IDS.get((local, stamp[:4])) or _made_up_id(local, year)
            futures.append(_future(_ROOTS[symbol], con_id, local, stamp, step, year))
    return (*others, *futures)


def _not_expired(contract: SimContract, day: date) -> SimContract:
    """The spread keeps trading on any session day: its expiry moves a year past the day."""
    if not contract.expired(day):
        return contract
    last = date(day.year + 1, 12, 16).strftime("%Y%m%d")
    return replace(contract, last_trade_date=last, contract_month=f"{day.year + 2}01")


def _made_up_id(local: str, year: int) -> int:
    return 800_000_000 + zlib.crc32(f"{local}:{year}".encode()) % 100_000_000


def _last_trade_day(symbol: str, year: int, month: int) -> date:
    """CME's rules without holidays: equity index futures the third Friday of the month,
    gold the third-last business day, crude oil three business days before the 25th of the
    month before (four when the 25th is not a business day)."""
    if symbol == "GC":
        day = date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)
        return _business_days_back(day, 2 if day.weekday() < 5 else 3)
    if symbol == "CL":
        before = date(year - (month == 1), (month - 2) % 12 + 1, 25)
        return _business_days_back(before, 3 if before.weekday() < 5 else 4)
    first = date(year, month, 1)
    return first + timedelta(days=(4 - first.weekday()) % 7 + 14)


def _business_days_back(day: date, count: int) -> date:
    while count:
        day -= timedelta(days=1)
        count -= day.weekday() < 5
    return day


def session_date_of(text: str | None = None) -> date:
    """The simulator's trading day: `text` (YYYY-MM-DD), else `$IBSTREAM_SESSION_DATE`, else
    today (UTC)."""
    text = text or os.environ.get(SESSION_DATE_ENV, "").strip()
    if not text:
        return datetime.now(UTC).date()
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"session date {text!r} is not a date of the form YYYY-MM-DD") from None
