"""The contracts the gateway simulator knows, and how a request's fields match them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType

_STK_HOURS = "20261125:0930-20261125:1600;20261126:CLOSED"
_FUT_HOURS = "20261124:1700-20261125:1600;20261125:1700-20261126:1600"
_FX_HOURS = "20261124:1715-20261125:1700;20261125:1715-20261126:1700"


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
    market_name: str = ""
    valid_exchanges: str = ""
    order_types: str = "LMT,MKT,STP"
    time_zone_id: str = "US/Eastern"
    trading_hours: str = _STK_HOURS
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


BUILTIN_CONTRACTS: tuple[SimContract, ...] = (
    SimContract(
        con_id=265598,
        symbol="AAPL",
        sec_type="STK",
        exchange="SMART",
        primary_exchange="NASDAQ",
        currency="USD",
        local_symbol="AAPL",
        trading_class="NMS",
        last_trade_date="",
        multiplier="",
        min_tick=0.01,
        long_name="APPLE INC",
        start_price=230.0,
        trade_size=100,
        quote_size=400,
        venues=("NASDAQ", "ARCA", "BATS", "EDGX", "IEX", "DARK"),
        market_name="NMS",
        valid_exchanges="SMART,AMEX,NYSE,BATS,ARCA,NASDAQ,IEX,EDGX",
        industry="Technology",
        category="Computers",
        subcategory="Computers",
        stock_type="COMMON",
        market_rule_ids="26,26,26,26,26,26,26,26",
    ),
    SimContract(
        con_id=12087792,
        symbol="EUR",
        sec_type="CASH",
        exchange="IDEALPRO",
        primary_exchange="",
        currency="USD",
        local_symbol="EUR.USD",
        trading_class="EUR.USD",
        last_trade_date="",
        multiplier="",
        min_tick=0.00005,
        long_name="European Monetary Union Euro",
        start_price=1.08,
        trade_size=100_000,
        quote_size=1_000_000,
        size_increment=1000,
        venues=("IDEALPRO",),
        market_name="EUR.USD",
        valid_exchanges="IDEALPRO",
        time_zone_id="US/Eastern",
        trading_hours=_FX_HOURS,
        market_rule_ids="239",
    ),
    SimContract(
        con_id=637533641,
        symbol="ES",
        sec_type="FUT",
        exchange="CME",
        primary_exchange="CME",
        currency="USD",
        local_symbol="ESZ6",
        trading_class="ES",
        last_trade_date="20261218",
        multiplier="50",
        min_tick=0.25,
        long_name="E-mini S&P 500",
        start_price=5900.0,
        trade_size=3,
        quote_size=40,
        venues=("CME",),
        market_name="ES",
        valid_exchanges="CME,QBALGO",
        time_zone_id="US/Central",
        trading_hours=_FUT_HOURS,
        market_rule_ids="67,67",
        under_con_id=11004968,
        under_symbol="ES",
        under_sec_type="IND",
    ),
    SimContract(
        con_id=654503320,
        symbol="MNQ",
        sec_type="FUT",
        exchange="CME",
        primary_exchange="CME",
        currency="USD",
        local_symbol="MNQZ6",
        trading_class="MNQ",
        last_trade_date="20261218",
        multiplier="2",
        min_tick=0.25,
        long_name="Micro E-Mini Nasdaq-100 Index",
        start_price=21000.0,
        trade_size=2,
        quote_size=12,
        venues=("CME",),
        market_name="MNQ",
        valid_exchanges="CME,QBALGO",
        time_zone_id="US/Central",
        trading_hours=_FUT_HOURS,
        market_rule_ids="67,67",
        under_con_id=362687422,
        under_symbol="NQ",
        under_sec_type="IND",
    ),
)

BUILTIN_BY_CON_ID: Mapping[int, SimContract] = MappingProxyType(
    {c.con_id: c for c in BUILTIN_CONTRACTS}
)


def match_contracts(
    contracts: Iterable[SimContract],
    *,
    con_id: int = 0,
    symbol: str = "",
    sec_type: str = "",
    exchange: str = "",
    currency: str = "",
    local_symbol: str = "",
    last_trade_date: str = "",
) -> list[SimContract]:
    """Contracts a request describes: by conId when non-zero, else by the given fields.

    An empty field matches anything; exchange matches the routing or primary exchange;
    lastTradeDateOrContractMonth matches as a prefix (`202612` matches `20261218`).
    """
    if con_id:
        return [c for c in contracts if c.con_id == con_id]
    if not symbol and not local_symbol:
        return []

    def same(want: str, have: str) -> bool:
        return not want or want.upper() == have.upper()

    return [
        c
        for c in contracts
        if same(symbol, c.symbol)
        and same(local_symbol, c.local_symbol)
        and same(sec_type, c.sec_type)
        and same(currency, c.currency)
        and (not exchange or exchange.upper() in (c.exchange, c.primary_exchange))
        and c.last_trade_date.startswith(last_trade_date)
    ]
