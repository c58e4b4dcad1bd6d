"""The synthetic market on its own: grid, spread, determinism, causality, regimes, rate."""

from __future__ import annotations

import dataclasses
import functools
import math

import pytest

from ibstream.gateway.contracts import (
    BUILTIN_BY_CON_ID,
    BUILTIN_CONTRACTS,
    SESSION_DATE,
    match_contracts,
)
from ibstream.gateway.market import BUY, SELL, Market, Quote, Regime, Trade

ES = BUILTIN_BY_CON_ID[637533641]
AAPL = BUILTIN_BY_CON_ID[265598]
EUR = BUILTIN_BY_CON_ID[12087792]
NOW = 1_800_000_000.0


def on_grid(price: float, tick: float) -> bool:
    ticks = price / tick
    return abs(ticks - round(ticks)) < 1e-6 and len(repr(price)) <= len(repr(tick)) + 8


@pytest.mark.parametrize("contract", BUILTIN_CONTRACTS, ids=lambda c: c.symbol)
def test_prices_on_grid_spread_at_least_one_tick_sizes_positive(contract):
    market = Market(contract, seed=3)
    events = market.step(6000, NOW)
    assert len(events) == 6000
    assert isinstance(events[0], Quote)
    quotes = [e for e in events if isinstance(e, Quote)]
    trades = [e for e in events if isinstance(e, Trade)]
    assert len(trades) > 500 and len(quotes) > 2000
    tick = contract.min_tick
    for q in quotes:
        assert on_grid(q.bid, tick) and on_grid(q.ask, tick), q
        assert q.ask - q.bid >= tick * (1 - 1e-9), q
        assert q.bid_size > 0 and q.ask_size > 0
    spreads = {round((q.ask - q.bid) / tick) for q in quotes}
    assert 1 in spreads and max(spreads) >= 2  # mostly one tick, sometimes wider
    for t in trades:
        assert on_grid(t.price, tick), t
        assert t.size > 0 and t.size % contract.size_increment == 0
        assert t.side in (BUY, SELL)
    assert abs(quotes[0].bid - contract.start_price) <= max(0.02 * abs(contract.start_price), tick)
    if contract.lowest_bid is not None:  # only the spread may go to zero and below
        assert min(q.bid for q in quotes) >= contract.price(contract.lowest_bid)


def test_same_seed_same_events_other_seed_differs():
    first = Market(AAPL, seed=11).step(3000, NOW)
    again = Market(AAPL, seed=11).step(3000, NOW)
    other = Market(AAPL, seed=12).step(3000, NOW)
    assert first == again
    assert first != other


def test_events_do_not_depend_on_how_time_is_sliced():
    coarse = Market(ES, seed=5, rate=200)
    fine = Market(ES, seed=5, rate=200)
    a = coarse.advance(5.0, NOW)
    b: list = []
    while len(b) < len(a):
        b += fine.advance(0.01, NOW)
    assert len(a) > 10
    assert b[: len(a)] == a


def classify(trade: Trade, quote: Quote) -> int:
    if trade.price >= quote.ask:
        return BUY
    if trade.price <= quote.bid:
        return SELL
    return 0


@pytest.mark.parametrize("contract", [ES, AAPL, EUR], ids=lambda c: c.symbol)
def test_quote_rule_recovers_aggressor_except_inside_spread_trades(contract):
    market = Market(contract, seed=21)
    last: Quote | None = None
    checked = inside = 0
    for event in market.step(40_000, NOW):
        if isinstance(event, Quote):
            last = event
            continue
        assert last is not None, "a trade came before any quote"
        if event.inside:
            inside += 1
            assert last.bid < event.price < last.ask
            assert classify(event, last) == 0
        else:
            assert classify(event, last) == event.side, (event, last)
            checked += 1
    assert checked > 5000
    assert 0.002 < inside / (inside + checked) < 0.15


def test_ground_truth_totals_and_bounded_history():
    market = Market(ES, seed=2, history=100)
    events = market.step(5000, NOW)
    trades = [e for e in events if isinstance(e, Trade)]
    assert market.trade_count == len(trades) > 100
    assert len(market.trades) == 100
    assert list(market.trades) == trades[-100:]
    assert market.buy_volume == sum(t.size for t in trades if t.side == BUY)
    assert market.sell_volume == sum(t.size for t in trades if t.side == SELL)
    assert market.delta == market.buy_volume - market.sell_volume
    assert market.inside_count == sum(t.inside for t in trades)
    assert market.last_quote == [e for e in events if isinstance(e, Quote)][-1]
    assert market.events == 5000


def test_regimes_give_buy_and_sell_dominated_windows():
    market = Market(ES, seed=8)
    seen = set()
    trades: list[Trade] = []
    for _ in range(200):
        trades += [e for e in market.step(250, NOW) if isinstance(e, Trade)]
        seen.add(market.regime)
    assert seen == set(Regime)
    window = 250
    shares = []
    for i in range(0, len(trades) - window, window):
        chunk = trades[i : i + window]
        shares.append(sum(t.side == BUY for t in chunk) / window)
    assert max(shares) > 0.6
    assert min(shares) < 0.4


def test_rate_without_bursts_is_exact_and_can_change():
    market = Market(MNQ := BUILTIN_BY_CON_ID[654503320], seed=1, rate=20, bursts=False)
    assert market.contract is MNQ
    assert len(market.advance(1.0, NOW)) == 20
    market.rate = 5000
    assert len(market.advance(0.5, NOW)) == 2500
    assert len(market.advance(60.0, NOW)) == 5000  # a stall yields at most a second
    market.rate = 0
    assert market.advance(10.0, NOW) == []
    with pytest.raises(ValueError):
        market.rate = -1


def test_bursts_and_quiet_spells_keep_the_mean_rate():
    market = Market(AAPL, seed=4, rate=20)
    spells = set()
    total = 0
    for _ in range(60_000):  # ten simulated minutes
        total += len(market.advance(0.01, NOW))
        spells.add(market.spell)
    assert spells == {"normal", "burst", "quiet"}
    assert 0.5 < total / (600 * 20) < 2.0


def test_match_contracts_by_con_id_symbol_and_fields():
    match = functools.partial(match_contracts, BUILTIN_CONTRACTS, today=SESSION_DATE)
    assert [c.con_id for c in match(con_id=265598)] == [265598]
    assert match(con_id=1) == []
    assert match(symbol="aapl", sec_type="STK") == [AAPL]
    assert match(symbol="AAPL", exchange="NASDAQ") == [AAPL]
    assert match(symbol="AAPL", currency="EUR") == []
    assert match(symbol="ES", last_trade_date="202612") == [ES]
    assert match(symbol="ES", last_trade_date="20261218") == [ES]
    assert match(local_symbol="EUR.USD") == [EUR]
    assert match() == []
    assert math.isclose(EUR.price(EUR.to_ticks(1.08)), 1.08)
    assert EUR.decimals == 5 and ES.decimals == 2


def test_futures_have_several_expiries_and_expired_ones_need_include_expired():
    match = functools.partial(match_contracts, BUILTIN_CONTRACTS, today=SESSION_DATE)
    for root in ("ES", "MNQ", "NQ", "CL", "GC"):
        live = match(symbol=root, sec_type="FUT")
        every = match(symbol=root, sec_type="FUT", include_expired=True)
        assert len(live) >= 3 and len(every) == len(live) + 1, root
        [gone] = set(every) - set(live)
        assert gone.last_trade_date < SESSION_DATE.strftime("%Y%m%d") and gone.expired(SESSION_DATE)
        assert match(con_id=gone.con_id) == []  # as IB: expired contracts are not found
    # CL's January contract stops trading in December: the month is the delivery month
    [clf7] = match(symbol="CL", last_trade_date="202701")
    assert (clf7.local_symbol, clf7.last_trade_date) == ("CLF7", "20261217")
    assert ES.hours(SESSION_DATE).startswith("20261124:1700-20261125:1600")


def test_all_last_has_every_trade_and_last_omits_conditioned_ones():
    events = Market(AAPL, seed=5).step(20_000, NOW)
    trades = [e for e in events if isinstance(e, Trade)]
    last = [t for t in trades if t.last_eligible]
    odd = [t for t in trades if t.conditions == "I"]
    flagged = [t for t in trades if t.conditions == "4"]
    assert odd and all(t.size < 100 for t in odd)
    assert flagged and all(t.exchange == "FINRA" for t in flagged)
    assert 0 < len(last) < len(trades) and all(t.size >= 100 for t in last)
    futures = [e for e in Market(ES, seed=5).step(5000, NOW) if isinstance(e, Trade)]
    assert all(t.last_eligible for t in futures)  # no odd lots or off-exchange prints


def test_conditions_do_not_change_the_seeded_market():
    """Conditions come from their own generator: a contract without odd lots (draws fewer
    conditions) gets the very same prices, sizes and sides."""
    no_odd_lots = dataclasses.replace(AAPL, sec_type="CFD")

    def tape(contract):
        events = Market(contract, seed=9).step(3000, NOW)
        return [(t.price, t.size, t.side) for t in events if isinstance(t, Trade)]

    assert len(tape(AAPL)) > 500 and tape(AAPL) == tape(no_odd_lots)
