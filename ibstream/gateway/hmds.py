"""`reqHistoricalTicks` answered as IB's historical data service (HMDS) answers it.

The request (message 96) carries the 12 contract fields, includeExpired, startDateTime,
endDateTime (exactly one of them set), numberOfTicks (at most 1,000), whatToShow (TRADES,
BID_ASK or MIDPOINT), useRth, ignoreSize and miscOptions. The answer is one message of the
kind's type (98 HistoricalTickLast, 97 HistoricalTickBidAsk, 96 HistoricalTick) holding the
ticks oldest first and IB's `done` flag. Refusals are IB's: 321 for a malformed request, 200
for an unknown contract, 162 for no permission, no data (a range older than the simulator
keeps) and pacing violations.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ibstream.gateway.instrument import SimContract
from ibstream.gateway.rejects import error_message, validation_error
from ibstream.gateway.tape import Tape
from ibstream.gateway.wire import encode
from ibstream.ib.pacing import PACING_VIOLATION

MAX_TICKS = 1000
ANSWER_IDS = {"MIDPOINT": 96, "BID_ASK": 97, "TRADES": 98}
HMDS = "Historical Market Data Service error message:"


@dataclass(frozen=True, slots=True)
class TicksRequest:
    """The fields of one reqHistoricalTicks after the contract's."""

    req_id: int
    contract_fields: tuple[str, ...]
    start: int | None
    end: int | None
    number: int
    what: str
    use_rth: bool

    @property
    def identity(self) -> tuple:
        """What makes two requests identical for the 15-second rule."""
        return (self.contract_fields, self.start, self.end, self.number, self.what, self.use_rth)


def parse_ib_time(text: str) -> int:
    """Epoch seconds of IB's `yyyyMMdd HH:mm:ss[ zone]` or `yyyyMMdd-HH:mm:ss` (UTC); without
    a zone the simulator's login zone, UTC."""
    day, _, rest = text.strip().replace("-", " ", 1).partition(" ")
    clock, _, zone = rest.partition(" ")
    when = datetime.strptime(f"{day} {clock}", "%Y%m%d %H:%M:%S")
    tz = ZoneInfo(zone) if zone and zone != "UTC" else UTC
    return int(when.replace(tzinfo=tz).timestamp())


def parse_request(fields: list[str]) -> TicksRequest | tuple[int, str]:
    """The request of a message 96, or the (code, text) TWS refuses a malformed one with."""
    req_id = int(fields[1])
    start_text, end_text, number_text, what = fields[15], fields[16], fields[17], fields[18]
    if bool(start_text) == bool(end_text):
        return validation_error("exactly one of startDateTime and endDateTime must be given")
    try:
        start = parse_ib_time(start_text) if start_text else None
        end = parse_ib_time(end_text) if end_text else None
    except (ValueError, ZoneInfoNotFoundError):
        return validation_error(f"bad date/time {start_text or end_text!r}")
    number = int(number_text or 0)
    if not 0 < number <= MAX_TICKS:
        return validation_error(f"numberOfTicks must be 1..{MAX_TICKS}, not {number}")
    what = what.upper()
    if what not in ANSWER_IDS:
        return validation_error(f"whatToShow must be TRADES, BID_ASK or MIDPOINT, not {what!r}")
    use_rth = fields[19] in ("1", "true", "True")
    return TicksRequest(req_id, tuple(fields[2:14]), start, end, number, what, use_rth)


def no_permission(contract: SimContract) -> tuple[int, str]:
    """IB's words for a historical request on a contract the account may not see."""
    return 162, f"{HMDS}No market data permissions for {contract.exchange} {contract.sec_type}"


def pacing_violation() -> tuple[int, str]:
    return 162, PACING_VIOLATION


def answer(request: TicksRequest, tape: Tape) -> bytes | tuple[int, str]:
    """The answer message, or IB's 162 when the range lies wholly before the kept past."""
    horizon = tape.series[request.what].horizon
    anchor = request.start if request.start is not None else request.end
    if horizon is not None and anchor is not None and anchor < horizon:
        return 162, error_message(162)  # HMDS query returned no data
    ticks = tape.page(request.what, request.number, request.start, request.end, request.use_rth)
    fields: list[object] = [ANSWER_IDS[request.what], request.req_id, len(ticks)]
    if request.what == "TRADES":
        for second, (price, size, exchange, conditions) in ticks:
            fields += (second, 0, price, size, exchange, conditions)
    elif request.what == "BID_ASK":
        for second, (bid, ask, bid_size, ask_size) in ticks:
            fields += (second, 0, bid, ask, bid_size, ask_size)
    else:
        for second, (mid,) in ticks:
            fields += (second, "", mid, 0)
    fields.append(1)  # done
    return encode(*fields)
