"""A synthetic, seeded order-flow market for one contract, with its ground truth.

`Market.step(n)` returns the next n events (quote updates and trades) in causal order:
the quote a trade is judged against is always emitted before the trade, so the rule
"price >= ask is a buy, <= bid is a sell, else neutral" applied against the last emitted
quote recovers the recorded aggressor for every trade except those marked `inside`
(printed strictly inside a spread wider than one tick, aggressor still recorded). Those sit
where hidden liquidity prints them: a buy above the midpoint, a sell below it, either at the
midpoint of an even spread; so the midpoint rule (Lee-Ready) recovers all but the midpoint ones.
`Market.advance(dt)` turns elapsed time into a number of due events at the current rate,
with bursts and quiet spells. Prices and sides depend only on the seed and the number of
events taken, never on timing.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from dataclasses import dataclass, replace
from enum import StrEnum

from ibstream.gateway.contracts import SimContract

BUY = 1
SELL = -1
TRADE_PROBABILITY = 0.35  # share of market actions that are trades
INSIDE_FRACTION = 0.08  # share of trades printed inside a spread wider than one tick
MAX_SPREAD = 4  # ticks
REGIME_MEAN_ACTIONS = 1500
MAX_CATCHUP_SECONDS = 1.0  # after a stall, at most this much backlog is generated
ROUND_LOT = 100  # shares; smaller stock trades are odd lots ("I")
OFF_EXCHANGE = "FINRA"  # where off-exchange stock prints are reported
FLAGGED_OFF_EXCHANGE = 0.25  # share of those printed with a condition ("4": derivatively priced)


class Regime(StrEnum):
    BUYING = "buying"
    SELLING = "selling"
    BALANCED = "balanced"


_BUY_PROBABILITY = {Regime.BUYING: 0.7, Regime.SELLING: 0.3, Regime.BALANCED: 0.5}
_UP_PROBABILITY = {Regime.BUYING: 0.7, Regime.SELLING: 0.3, Regime.BALANCED: 0.5}
# spell name -> (rate multiplier, mean duration in seconds)
_SPELLS = {"normal": (1.0, 20.0), "burst": (4.0, 3.0), "quiet": (0.15, 8.0)}


@dataclass(frozen=True, slots=True)
class Quote:
    time: float
    bid: float
    ask: float
    bid_size: float
    ask_size: float

    @property
    def mid(self) -> float:
        return (self.bid + self.ask) / 2


@dataclass(frozen=True, slots=True)
class Trade:
    time: float
    price: float
    size: float
    side: int  # BUY or SELL: the aggressor
    inside: bool  # printed strictly inside the spread
    exchange: str
    conditions: str = ""  # IB's specialConditions; a trade with any is AllLast-only

    @property
    def last_eligible(self) -> bool:
        """Whether IB's "Last" stream carries it (odd lots and flagged prints are omitted)."""
        return not self.conditions


Event = Quote | Trade


class Market:
    """The book top and trade tape of one contract, plus ground-truth totals."""

    def __init__(
        self,
        contract: SimContract,
        seed: int = 0,
        rate: float = 20.0,
        *,
        bursts: bool = True,
        history: int = 100_000,
    ) -> None:
        self.contract = contract
        self.rate = rate
        self.bursts = bursts
        self._rng = random.Random(seed ^ contract.con_id)
        self._clock = random.Random(f"{seed}:{contract.con_id}:clock")
        self._tape = random.Random(f"{seed}:{contract.con_id}:tape")  # trade conditions only
        self._odd_lots = contract.sec_type == "STK"
        self._bid = contract.to_ticks(contract.start_price)
        self._spread = 1
        self._bid_size = self._draw(contract.quote_size)
        self._ask_size = self._draw(contract.quote_size)
        self.regime = Regime.BALANCED
        self._regime_left = self._regime_length()
        self.spell = "normal"
        self._spell_left = self._clock.expovariate(1 / _SPELLS["normal"][1])
        self._budget = 0.0
        self._pending: deque[Event] = deque()
        self._pending.append(self._quote(0.0))
        self.trades: deque[Trade] = deque(maxlen=history)
        self.last_quote: Quote | None = None
        self.events = 0
        self.trade_count = 0
        self.inside_count = 0
        self.buy_volume = 0.0
        self.sell_volume = 0.0

    @property
    def rate(self) -> float:
        """Mean events per second outside bursts and quiet spells."""
        return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        if not value >= 0:
            raise ValueError(f"rate must be >= 0, not {value!r}")
        self._rate = float(value)

    @property
    def intensity(self) -> float:
        return _SPELLS[self.spell][0] if self.bursts else 1.0

    @property
    def delta(self) -> float:
        return self.buy_volume - self.sell_volume

    def step(self, n: int, now: float | None = None) -> list[Event]:
        """The next n events, each stamped `now` (epoch seconds): the time it is sent."""
        stamp = time.time() if now is None else now
        out: list[Event] = []
        while len(out) < n:
            if not self._pending:
                self._act(stamp)
            event = self._pending.popleft()
            if event.time != stamp:  # left over from an earlier act: it is sent now
                event = replace(event, time=stamp)
            if isinstance(event, Trade):
                self.trades.append(event)
                self.trade_count += 1
                self.inside_count += event.inside
                if event.side == BUY:
                    self.buy_volume += event.size
                else:
                    self.sell_volume += event.size
            else:
                self.last_quote = event
            out.append(event)
        self.events += n
        return out

    def advance(self, dt: float, now: float | None = None) -> list[Event]:
        """Events due after `dt` more seconds at the current rate and spell."""
        if self.bursts:
            self._spell_left -= dt
            while self._spell_left <= 0:
                if self.spell == "normal":
                    self.spell = "burst" if self._clock.random() < 0.5 else "quiet"
                else:
                    self.spell = "normal"
                self._spell_left += self._clock.expovariate(1 / _SPELLS[self.spell][1])
        per_second = self._rate * self.intensity
        self._budget += dt * per_second
        due = int(self._budget)
        self._budget -= due
        cap = max(1, int(per_second * MAX_CATCHUP_SECONDS))
        if due > cap:
            due, self._budget = cap, 0.0
        return self.step(due, now) if due else []

    # -- market actions ---------------------------------------------------------------

    def _act(self, now: float) -> None:
        self._regime_left -= 1
        if self._regime_left <= 0:
            self._switch_regime()
        if self._rng.random() < TRADE_PROBABILITY:
            self._trade(now)
        else:
            self._requote(now)

    def _trade(self, now: float) -> None:
        rng, c = self._rng, self.contract
        side = BUY if rng.random() < _BUY_PROBABILITY[self.regime] else SELL
        size = self._draw(c.trade_size)
        venue = rng.choice(c.venues) if c.venues else c.exchange
        if self._spread > 1 and rng.random() < INSIDE_FRACTION:
            # hidden or midpoint liquidity: a buyer lifts it above the mid, a seller below;
            # the mid itself (an even spread) is a level both sides can print at
            half = self._spread / 2
            low, high = (math.ceil(half), self._spread - 1) if side == BUY else (1, int(half))
            price = c.price(self._bid + rng.randint(low, high))
            self._pending.append(
                Trade(now, price, size, side, True, venue, self._flags(size, venue))
            )
            return  # the displayed book does not change
        if side == BUY:
            size = min(size, self._ask_size)
            price = c.price(self._bid + self._spread)
            self._pending.append(
                Trade(now, price, size, BUY, False, venue, self._flags(size, venue))
            )
            self._ask_size -= size
            if self._ask_size <= 0:  # level consumed: the ask moves up a tick
                self._ask_size = self._draw(c.quote_size)
                if self._spread < MAX_SPREAD:
                    self._spread += 1
                else:
                    self._bid += 1
        else:
            size = min(size, self._bid_size)
            price = c.price(self._bid)
            self._pending.append(
                Trade(now, price, size, SELL, False, venue, self._flags(size, venue))
            )
            self._bid_size -= size
            if self._bid_size <= 0:  # level consumed: the bid moves down a tick
                self._bid_size = self._draw(c.quote_size)
                if self._spread < MAX_SPREAD and c.bid_may_fall(self._bid, 1):
                    self._bid -= 1
                    self._spread += 1
        self._pending.append(self._quote(now))

    def _requote(self, now: float) -> None:
        rng, c = self._rng, self.contract
        up = rng.random() < _UP_PROBABILITY[self.regime]
        u = rng.random()
        if self._spread > 1 and u < 0.5:  # liquidity fills the gap
            self._spread -= 1
            if up:
                self._bid += 1
                self._bid_size = self._draw(c.quote_size)
            else:
                self._ask_size = self._draw(c.quote_size)
        elif self._spread == 1 and u < 0.06:  # a side pulls back, sometimes two ticks
            widen = 1 if rng.random() < 0.75 else 2
            self._spread += widen
            if not up and c.bid_may_fall(self._bid, widen):
                self._bid -= widen
        elif u < 0.2:  # the whole quote shifts a tick
            if up or c.bid_may_fall(self._bid, 1):
                self._bid += 1 if up else -1
            self._bid_size = self._draw(c.quote_size)
            self._ask_size = self._draw(c.quote_size)
        else:  # size added or cancelled at one side
            delta = self._draw(c.trade_size) * (1 if rng.random() < 0.55 else -1)
            inc = c.size_increment
            if rng.random() < 0.5:
                self._bid_size = max(inc, self._bid_size + delta)
            else:
                self._ask_size = max(inc, self._ask_size + delta)
        self._pending.append(self._quote(now))

    def _flags(self, size: float, venue: str) -> str:
        """specialConditions of a trade: "I" for an odd lot, "4" for some off-exchange prints
        (drawn from their own generator, so the market's prices and sides do not change)."""
        if self._odd_lots and size < ROUND_LOT:
            return "I"
        if venue == OFF_EXCHANGE and self._tape.random() < FLAGGED_OFF_EXCHANGE:
            return "4"
        return ""

    def _quote(self, now: float) -> Quote:
        c = self.contract
        return Quote(
            now,
            c.price(self._bid),
            c.price(self._bid + self._spread),
            self._bid_size,
            self._ask_size,
        )

    def _draw(self, typical: float) -> float:
        inc = self.contract.size_increment
        value = self._rng.lognormvariate(math.log(typical), 0.7)
        return float(max(inc, round(value / inc) * inc))

    def _regime_length(self) -> int:
        return 200 + int(self._rng.expovariate(1 / REGIME_MEAN_ACTIONS))

    def _switch_regime(self) -> None:
        others = [r for r in Regime if r != self.regime]
        if self.regime == Regime.BALANCED:
            self.regime = self._rng.choice(others)
        else:
            balanced_first = self._rng.random() < 0.6
            self.regime = (
                Regime.BALANCED
                if balanced_first
                else [r for r in others if r != Regime.BALANCED][0]
            )
        self._regime_left = self._regime_length()
