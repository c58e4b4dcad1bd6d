"""Points in time as a person or a client writes them, to epoch nanoseconds and back.

Shared by the protocol (`config.start` of a subscribe to a replay server) and the command
line (`ibstream replay --start / --end`), so both accept the same spellings: ISO-8601 with
up to nine fractional digits (`2026-12-07T14:30:00.123456789Z`, an offset, or none: UTC),
a date alone (midnight UTC), or epoch nanoseconds as an integer. `epoch_ns` is the rule for
an epoch number of unstated unit (history requests, `Client.history`): seconds or ns.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

_FRACTION = re.compile(r"^(?P<head>[^.]*)\.(?P<digits>\d+)(?P<tail>.*)$")
_NS_PER_S = 1_000_000_000
SECONDS_BELOW = 10**11  # an epoch number below this is seconds (until the year 5138) ...
NANOS_FROM = 10**15  # ... and from this on nanoseconds (milliseconds are not taken)


def epoch_ns(number: float, *, whole_ns: bool = True) -> int:
    """An epoch number as nanoseconds: below 10^11 seconds, from 10^15 nanoseconds (an int;
    with `whole_ns` False also an integral float); ValueError for what lies between
    (milliseconds) or before 1970."""
    if not (number == number and 0 <= number < 2**63):
        raise ValueError(f"{number!r} is not a time at or after 1970 in epoch seconds or ns")
    if number < SECONDS_BELOW:
        return round(number * _NS_PER_S)
    if number >= NANOS_FROM and (
        isinstance(number, int) or (not whole_ns and float(number).is_integer())
    ):
        return int(number)
    raise ValueError(
        f"{number!r} is neither epoch seconds (below 10^11) nor epoch nanoseconds (10^15 or "
        "more); milliseconds are not taken"
    )


def parse_time_ns(value: object) -> int:
    """`value` as epoch nanoseconds; ValueError saying what is accepted otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"a time in epoch nanoseconds is >= 0, not {value}")
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected an ISO-8601 time such as 2026-12-07T14:30:00Z, got {value!r}")
    text = value.strip()
    if text.isdigit():
        return int(text)
    nanos = 0
    found = _FRACTION.match(text)
    if found is not None:  # datetime keeps microseconds: the rest of the digits apart
        digits = found["digits"][:9]
        nanos = int(digits.ljust(9, "0"))
        text = found["head"] + found["tail"]
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise ValueError(
            f"expected an ISO-8601 time such as 2026-12-07T14:30:00Z (UTC unless an offset is "
            f"given) or epoch nanoseconds, got {value!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) * _NS_PER_S + nanos  # whole seconds: exact as a float


def iso_ns(ns: int) -> str:
    """Epoch nanoseconds as ISO-8601 UTC with all nine digits (what `parse_time_ns` reads)."""
    seconds, nanos = divmod(ns, _NS_PER_S)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{nanos:09d}Z"
