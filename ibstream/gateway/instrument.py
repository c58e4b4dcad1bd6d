"""The simulator's contract record, and how a request's fields select contracts as IB does."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class SimContract:
    """A simulated instrument: its IB contract details plus how its market behaves."""

    con_id: int
    symbol: str
    sec_type: str
    exchange: str
    primary_exchange: str
    currency: str
    local_symbol: str
    trading_class: str
    last_trade_date: str
    multiplier: str
    min_tick: float
    long_name: str
    start_price: float
    trade_size: float  # typical aggressor order size
    quote_size: float  # typical displayed size at the best bid/ask
    size_increment: float = 1.0
    venues: tuple[str, ...] = ()  # exchanges reported on trades
    reports_trades: bool = True  # False for IDEALPRO cash: quotes only, no tape
    lowest_bid: int | None = 1  # ticks; None: prices may go to zero and below (spreads)
    contract_month: str = ""  # YYYYMM a future delivers in (may differ from its last trade)
    market_name: str = ""
    valid_exchanges: str = ""
    order_types: str = "LMT,MKT,STP"
    time_zone_id: str = "US/Eastern"
    trading_hours: str = "{d}:0930-{d}:1600;{n}:0930-{n}:1600"  # {p}/{d}/{n}: days around today
    industry: str = ""
    category: str = ""
    subcategory: str = ""
    stock_type: str = ""
    market_rule_ids: str = ""
    under_con_id: int = 0
    under_symbol: str = ""
    under_sec_type: str = ""

    @property
    def decimals(self) -> int:
        """Digits after the decimal point on this contract's tick grid."""
        return max(0, -int(Decimal(str(self.min_tick)).as_tuple().exponent))

    def price(self, ticks: int) -> float:
        """The price of a whole number of ticks, without float noise."""
        return round(ticks * self.min_tick, self.decimals)

    def to_ticks(self, price: float) -> int:
        return round(price / self.min_tick)

    def bid_may_fall(self, bid: int, ticks: int) -> bool:
        """Whether a bid of `bid` ticks may move `ticks` lower (`lowest_bid`)."""
        return self.lowest_bid is None or bid - ticks >= self.lowest_bid

    def expired(self, today: date) -> bool:
        """Past its last trading day (a contract still trades on that day)."""
        return bool(self.last_trade_date) and self.last_trade_date < today.strftime("%Y%m%d")

    def hours(self, today: date) -> str:
        """Trading hours as IB words them, for the session days around `today`."""
        day = "{:%Y%m%d}".format
        return self.trading_hours.format(
            p=day(today - timedelta(days=1)), d=day(today), n=day(today + timedelta(days=1))
        )


def match_contracts(
    contracts: Iterable[SimContract],
    *,
    today: date,
    con_id: int = 0,
    symbol: str = "",
    sec_type: str = "",
    exchange: str = "",
    currency: str = "",
    local_symbol: str = "",
    last_trade_date: str = "",
    include_expired: bool = False,
) -> list[SimContract]:
    """Contracts a request describes: by conId when non-zero, else by the given fields.

    An empty field matches anything; exchange matches the routing or primary exchange;
    lastTradeDateOrContractMonth is a contract month (YYYYMM) or a last trading day
    (YYYYMMDD). Expired contracts only with includeExpired, as on IB.
    """
    live = [c for c in contracts if include_expired or not c.expired(today)]
    if con_id:
        return [c for c in live if c.con_id == con_id]
    if not symbol and not local_symbol:
        return []

    def same(want: str, have: str) -> bool:
        return not want or want.upper() == have.upper()

    def when(c: SimContract) -> bool:
        if len(last_trade_date) == 6:
            return (c.contract_month or c.last_trade_date[:6]) == last_trade_date
        return c.last_trade_date.startswith(last_trade_date)

    return [
        c
        for c in live
        if same(symbol, c.symbol)
        and same(local_symbol, c.local_symbol)
        and same(sec_type, c.sec_type)
        and same(currency, c.currency)
        and (not exchange or exchange.upper() in (c.exchange, c.primary_exchange))
        and when(c)
    ]
