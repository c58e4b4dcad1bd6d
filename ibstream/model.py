"""The data model shared by every layer: tick types, ticks and contracts.

A tick is stamped with a nanosecond receive time when it leaves ib_insync, because IB's own
tick time has one-second resolution: arrival order is the only order between streams. IB's
time is kept beside it (`ib_time`, epoch seconds) for research that wants the venue's clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from ibstream.errors import ErrorCode, StreamError


class TickType(StrEnum):
    """Tick-by-tick data types; the value is the wire name, `ib_name` is IB's."""

    LAST = "last"
    ALL_LAST = "all_last"
    BID_ASK = "bid_ask"
    MID_POINT = "mid_point"

    @property
    def ib_name(self) -> str:
        return _IB_NAMES[self]

    @classmethod
    def parse(cls, value: object) -> TickType:
        """Accept the wire name (`bid_ask`) or IB's name (`BidAsk`), else INVALID_TICK_TYPE."""
        if isinstance(value, TickType):
            return value
        if isinstance(value, str):
            key = value.strip().replace("-", "_").lower()
            found = _ALIASES.get(key)
            if found is not None:
                return found
        raise StreamError(
            ErrorCode.INVALID_TICK_TYPE,
            f"unknown tick type {value!r}; use one of {', '.join(t.value for t in cls)}",
            details={"tick_type": value, "supported": [t.value for t in cls]},
        )

    @classmethod
    def parse_list(cls, value: object) -> list[TickType]:
        """Parse `bid_ask,last` or a list; rejects empty lists and duplicates are merged."""
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not items:
            raise StreamError(
                ErrorCode.INVALID_TICK_TYPE,
                "tick_types must be a non-empty list such as ['bid_ask', 'last']",
                details={"tick_types": value},
            )
        return list(dict.fromkeys(cls.parse(item) for item in items))


_IB_NAMES = {
    TickType.LAST: "Last",
    TickType.ALL_LAST: "AllLast",
    TickType.BID_ASK: "BidAsk",
    TickType.MID_POINT: "MidPoint",
}
_ALIASES = (
    {t.value: t for t in TickType}
    | {name.lower(): t for t, name in _IB_NAMES.items()}
    | {t.value.replace("_", ""): t for t in TickType}
)


@dataclass(frozen=True, slots=True)
class ContractInfo:
    """A resolved contract: what a client sees and what the IB source subscribes with."""

    contract_id: int
    symbol: str
    sec_type: str
    exchange: str
    currency: str
    local_symbol: str = ""
    min_tick: float = 0.01
    description: str = ""
    last_trade_date: str = ""
    multiplier: str = ""

    def to_dict(self) -> dict:
        return {k: v for k, v in _asdict(self).items() if v not in ("", None)}


@dataclass(slots=True)
class Tick:
    """One tick-by-tick event. Fields that do not apply to the tick type stay None."""

    contract_id: int
    tick_type: TickType
    recv_ns: int
    price: float | None = None
    size: float | None = None
    bid_price: float | None = None
    bid_size: float | None = None
    ask_price: float | None = None
    ask_size: float | None = None
    mid_price: float | None = None
    exchange: str | None = None
    conditions: str | None = None
    ib_time: int | None = None  # IB's own tick time, epoch seconds

    def data(self, sequence: int) -> dict:
        """The `data` object of a tick message: snake_case, nulls omitted. Spelled out field
        by field (no loop over names): it runs for every tick the server receives."""
        out: dict = {
            "contract_id": self.contract_id,
            "tick_type": self.tick_type.value,
            "sequence": sequence,
            "recv_ns": self.recv_ns,
        }
        if self.price is not None:
            out["price"] = self.price
        if self.size is not None:
            out["size"] = self.size
        if self.bid_price is not None:
            out["bid_price"] = self.bid_price
        if self.bid_size is not None:
            out["bid_size"] = self.bid_size
        if self.ask_price is not None:
            out["ask_price"] = self.ask_price
        if self.ask_size is not None:
            out["ask_size"] = self.ask_size
        if self.mid_price is not None:
            out["mid_price"] = self.mid_price
        if self.exchange:
            out["exchange"] = self.exchange
        if self.conditions:
            out["conditions"] = self.conditions
        if self.ib_time is not None:
            out["ib_time"] = self.ib_time
        return out


def price_decimals(min_tick: object, default: int = 2) -> int:
    """Decimal places that show every price on a contract's tick grid (0.25 -> 2,
    0.00005 -> 5; at most 8); `default` for a tick size that is not a positive number."""
    try:
        tick = Decimal(str(min_tick))
    except InvalidOperation:
        return default
    if not tick.is_finite() or tick <= 0:
        return default
    return min(8, max(0, -int(tick.normalize().as_tuple().exponent)))


def iso_timestamp(ns: int | None = None) -> str:
    """ISO-8601 UTC with milliseconds, the protocol's timestamp format."""
    dt = datetime.now(UTC) if ns is None else datetime.fromtimestamp(ns / 1e9, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _asdict(obj: ContractInfo) -> dict:
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}
