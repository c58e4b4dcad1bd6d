"""The gateway simulator over real TCP on loopback, driven by unmodified ib_insync/ib_async."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time

import ib_async
import pytest
from ib_insync import (
    IB,
    Contract,
    Forex,
    Future,
    MarketOrder,
    ScannerSubscription,
    Stock,
    TickByTickAllLast,
    TickByTickBidAsk,
)

from ibstream.gateway import BUILTIN_CONTRACTS, SESSION_DATE, GatewaySimulator, run_gateway
from ibstream.gateway.market import BUY, SELL
from ibstream.gateway.wire import FrameDecoder, ProtocolError, encode, fmt, parse_version_range

HOST = "127.0.0.1"
AAPL_ID, ES_ID, EUR_ID = 265598, 637533641, 12087792


@pytest.fixture
async def sim():
    async with GatewaySimulator(seed=7, rate=500, bursts=False) as gateway:
        yield gateway


@pytest.fixture
async def ib(sim):
    client = IB()
    await client.connectAsync(HOST, sim.port, clientId=1, timeout=5)
    yield client
    client.disconnect()


def errors_of(client) -> asyncio.Queue:
    """A queue of (reqId, errorCode, errorString) the client reports."""
    queue: asyncio.Queue = asyncio.Queue()
    client.errorEvent += lambda req_id, code, text, *_: queue.put_nowait((req_id, code, text))
    return queue


async def next_error(queue: asyncio.Queue, code: int, timeout: float = 5) -> tuple:
    async with asyncio.timeout(timeout):
        while True:
            err = await queue.get()
            if err[1] == code:
                return err


async def collect(ticker, n: int, kind: type | None = None, timeout: float = 5) -> list:
    """All tick-by-tick ticks the ticker gets until n of `kind` have arrived."""
    done = asyncio.get_running_loop().create_future()
    got: list = []

    def on_update(t) -> None:
        got.extend(t.tickByTicks)
        if sum(kind is None or isinstance(x, kind) for x in got) >= n and not done.done():
            done.set_result(None)

    ticker.updateEvent += on_update
    try:
        await asyncio.wait_for(done, timeout)
    finally:
        ticker.updateEvent -= on_update
    return got


def on_grid(price: float, tick: float) -> bool:
    return abs(price / tick - round(price / tick)) < 1e-6


# -- wire format --------------------------------------------------------------------------


def test_wire_framing_handshake_and_numbers():
    decoder = FrameDecoder()
    data = b"API\0" + struct.pack(">I", 9) + b"v157..176" + encode(71, 2, 5, "")
    messages = [m for i in range(len(data)) for m in decoder.feed(data[i : i + 1])]
    assert messages == [["v157..176"], ["71", "2", "5", ""]]
    assert parse_version_range("v157..178 +PACEAPI").max_version == 178
    assert parse_version_range("v100..151").min_version == 100
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(b"GET / HTTP/1.1\r\n")
    assert [fmt(5900.0), fmt(1.08005), fmt(True), fmt(None), fmt(146.0)] == [
        "5900", "1.08005", "1", "", "146",
    ]  # fmt: skip


async def raw_handshake(
    port: int, offer: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(b"API\0" + struct.pack(">I", len(offer)) + offer)
    return reader, writer


async def test_version_negotiation_and_refusal_of_old_clients(sim):
    reader, writer = await raw_handshake(sim.port, b"v157..178 +PACEAPI")
    size = struct.unpack(">I", await reader.readexactly(4))[0]
    version, conn_time, _ = (await reader.readexactly(size)).decode().split("\0")
    assert version == "176" and conn_time.endswith("UTC")
    writer.close()
    reader, writer = await raw_handshake(sim.port, b"v157..170")
    size = struct.unpack(">I", await reader.readexactly(4))[0]
    assert (await reader.readexactly(size)).split(b"\0")[0] == b"170"
    writer.close()
    reader, writer = await raw_handshake(sim.port, b"v100..151")
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed without an answer
    writer.close()


# -- ib_insync ------------------------------------------------------------------------


async def test_connect_is_quick_and_clean(sim, caplog):
    caplog.set_level(logging.INFO)
    client = IB()
    started = time.perf_counter()
    await client.connectAsync(HOST, sim.port, clientId=3, timeout=5)
    try:
        assert time.perf_counter() - started < 1.0
        assert client.managedAccounts() == ["DU1234567"]
        assert client.client.serverVersion() == 176
        assert sim.connections == 1
        now = await client.reqCurrentTimeAsync()  # the simulated session day, host's time
        assert now.date() == SESSION_DATE and abs(now.timestamp() % 86400 - time.time() % 86400) < 5
        assert not [r for r in caplog.records if "timed out" in r.getMessage()]
    finally:
        client.disconnect()
    await sim.wait_for(lambda: sim.connections == 0)


async def test_qualify_by_symbol_and_by_con_id(ib):
    aapl, es, eur = Stock("AAPL", "SMART", "USD"), Contract(conId=ES_ID), Forex("EURUSD")
    assert await ib.qualifyContractsAsync(aapl, es, eur) == [aapl, es, eur]
    assert aapl.conId == AAPL_ID and aapl.primaryExchange == "NASDAQ"
    assert (es.symbol, es.secType, es.localSymbol, es.multiplier) == ("ES", "FUT", "ESZ6", "50")
    assert es.lastTradeDateOrContractMonth == "20261218"
    assert eur.conId == EUR_ID and eur.localSymbol == "EUR.USD"
    [details] = await ib.reqContractDetailsAsync(Future("MNQ", "202612", exchange="CME"))
    assert details.contract.conId == 654503320 and details.minTick == 0.25
    assert details.longName == "Micro E-Mini Nasdaq-100 Index"


async def test_unknown_symbol_gives_error_200(ib):
    errors = errors_of(ib)
    contract = Stock("NOPE", "SMART", "USD")
    assert await ib.qualifyContractsAsync(contract) == []
    req_id, code, text = await next_error(errors, 200)
    assert req_id >= 0 and "No security definition" in text
    assert contract.conId == 0


@pytest.mark.parametrize("tick_type", ["BidAsk", "MidPoint", "Last", "AllLast"])
async def test_tick_by_tick_each_type(ib, sim, tick_type):
    contract = Contract(conId=AAPL_ID, exchange="SMART")
    ticker = ib.reqTickByTickData(contract, tick_type)
    ticks = await collect(ticker, 10)
    assert sim.subscriptions == [(1, ticker_req_id(ib, ticker), AAPL_ID, tick_type)]
    for tick in ticks:
        if tick_type == "BidAsk":
            assert tick.askPrice > tick.bidPrice and on_grid(tick.bidPrice, 0.01)
            assert tick.bidSize > 0 and tick.askSize > 0
        elif tick_type == "MidPoint":
            assert on_grid(tick.midPoint, 0.005) and 200 < tick.midPoint < 260
        else:
            assert tick.tickType == (1 if tick_type == "Last" else 2)
            assert on_grid(tick.price, 0.01) and tick.size > 0 and tick.exchange


def ticker_req_id(client, ticker) -> int:
    return next(r for r, t in client.wrapper.reqId2Ticker.items() if t is ticker)


async def test_trades_and_quotes_arrive_causally_and_match_ground_truth(ib, sim):
    es = Contract(conId=ES_ID, exchange="CME")
    ticker = ib.reqTickByTickData(es, "BidAsk")  # one Ticker gets both streams, in order
    ticks = await collect(ticker, 1)
    ib.reqTickByTickData(es, "Last")  # no await in between: no tick can be missed
    ticks += await collect(ticker, 40, TickByTickAllLast)
    truth = list(sim.market(ES_ID).trades)
    trades = [t for t in ticks if isinstance(t, TickByTickAllLast)]
    keys = [(t.price, t.size) for t in truth]
    start = keys.index((trades[0].price, trades[0].size))
    while keys[start : start + len(trades)] != [(t.price, t.size) for t in trades]:
        start = keys.index((trades[0].price, trades[0].size), start + 1)
    quote = None
    agree = 0
    for tick in ticks:
        if isinstance(tick, TickByTickBidAsk):
            quote = tick
            continue
        assert quote is not None
        real = truth[start]
        start += 1
        side = BUY if tick.price >= quote.askPrice else SELL if tick.price <= quote.bidPrice else 0
        assert side == (0 if real.inside else real.side)
        agree += not real.inside
    assert agree > 30


async def test_cancel_removes_subscription(ib, sim):
    contract = Contract(conId=EUR_ID, exchange="IDEALPRO")
    ticker = ib.reqTickByTickData(contract, "MidPoint")
    await collect(ticker, 1)
    assert [s[2:] for s in sim.subscriptions] == [(EUR_ID, "MidPoint")]
    ib.cancelTickByTickData(contract, "MidPoint")
    await sim.wait_for(lambda: not sim.subscriptions)


async def test_duplicate_request_id_gives_322_and_unknown_con_id_200(ib, sim):
    errors = errors_of(ib)
    contract = Contract(conId=AAPL_ID, exchange="SMART")
    req_id = ib.client.getReqId()
    ib.client.reqTickByTickData(req_id, contract, "BidAsk", 0, False)
    ib.client.reqTickByTickData(req_id, contract, "Last", 0, False)
    assert (await next_error(errors, 322))[0] == req_id
    assert sim.subscriptions == [(1, req_id, AAPL_ID, "BidAsk")]
    ib.reqTickByTickData(Contract(conId=999, exchange="SMART"), "Last")
    assert (await next_error(errors, 200))[0] > req_id


async def test_disconnect_ends_subscriptions(ib, sim):
    ib.reqTickByTickData(Contract(conId=AAPL_ID, exchange="SMART"), "BidAsk")
    await sim.wait_for(lambda: len(sim.subscriptions) == 1)
    ib.disconnect()
    await sim.wait_for(lambda: sim.connections == 0 and not sim.subscriptions)


async def test_duplicate_client_id_gets_326(ib, sim):
    second = IB()
    errors = errors_of(second)
    closed = asyncio.get_running_loop().create_future()
    second.client.apiError += lambda msg: closed.done() or closed.set_result(msg)
    task = asyncio.create_task(second.connectAsync(HOST, sim.port, clientId=1, timeout=5))
    try:
        assert (await next_error(errors, 326))[0] == -1
        assert "already in use" in await asyncio.wait_for(closed, 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert sim.connections == 1 and ib.isConnected()


# -- fault hooks --------------------------------------------------------------------------


async def test_drop_connections_disconnects_clients(ib, sim):
    ib.reqTickByTickData(Contract(conId=ES_ID, exchange="CME"), "Last")
    await sim.wait_for(lambda: len(sim.subscriptions) == 1)
    gone = asyncio.get_running_loop().create_future()
    ib.disconnectedEvent += lambda: gone.done() or gone.set_result(True)
    assert await sim.drop_connections() == 1
    await asyncio.wait_for(gone, 5)
    assert not ib.isConnected() and sim.subscriptions == [] and sim.connections == 0


async def test_refuse_connections_then_accept(sim):
    sim.refuse_connections(0.5)
    deadline = asyncio.get_running_loop().time() + 0.5
    reader, writer = await raw_handshake(sim.port, b"v157..176")
    with contextlib.suppress(ConnectionResetError):  # RST: our hello was never read
        assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    client = IB()
    with pytest.raises((TimeoutError, ConnectionError)):
        await client.connectAsync(HOST, sim.port, clientId=2, timeout=0.2)
    assert sim.refused_connections >= 2 and sim.connections == 0
    for _ in range(20):  # a reconnect loop, as a real client would run
        try:
            await client.connectAsync(HOST, sim.port, clientId=2, timeout=0.2)
            break
        except (TimeoutError, ConnectionError):
            continue
    try:
        assert client.isConnected() and sim.connections == 1
        assert asyncio.get_running_loop().time() >= deadline
    finally:
        client.disconnect()


async def test_send_error_reaches_client_and_1101_ends_subscriptions(ib, sim):
    errors = errors_of(ib)
    sim.send_error(10190)
    _, code, text = await next_error(errors, 10190)
    assert text == "Max number of tick-by-tick requests has been reached."
    ib.reqTickByTickData(Contract(conId=AAPL_ID, exchange="SMART"), "BidAsk")
    await sim.wait_for(lambda: len(sim.subscriptions) == 1)
    sim.send_error(1101)
    assert (await next_error(errors, 1101))[0] == -1
    assert sim.subscriptions == []


async def test_1100_pauses_data_until_1102(ib, sim):
    errors = errors_of(ib)
    contract = Contract(conId=ES_ID, exchange="CME")
    ticker = ib.reqTickByTickData(contract, "BidAsk")
    await collect(ticker, 1)
    sim.send_error(1100)
    await next_error(errors, 1100)  # everything sent before the pause has arrived
    during: list = []
    ticker.updateEvent += lambda t: during.extend(t.tickByTicks)
    market = sim.market(ES_ID)
    events = market.events
    await sim.wait_for(lambda: market.events > events + 100)  # the market goes on
    sim.send_error(1102)
    await next_error(errors, 1102)
    assert during == []  # nothing was sent between the two messages
    assert len(await collect(ticker, 5)) >= 5
    assert len(sim.subscriptions) == 1


async def test_fail_next_answers_the_next_request_with_an_error(ib, sim):
    errors = errors_of(ib)
    sim.fail_next("tick_by_tick", 10190)
    contract = Contract(conId=AAPL_ID, exchange="SMART")
    ticker = ib.reqTickByTickData(contract, "BidAsk")
    req_id, _, text = await next_error(errors, 10190)
    assert req_id == ticker_req_id(ib, ticker) and "tick-by-tick" in text
    assert sim.subscriptions == []
    ib.reqTickByTickData(contract, "Last")  # only the next one fails
    await sim.wait_for(lambda: len(sim.subscriptions) == 1)
    sim.fail_next("contract_details", 354)
    assert await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD")) == []
    assert (await next_error(errors, 354))[0] >= 0
    with pytest.raises(ValueError):
        sim.fail_next("orders", 1)


async def test_client_that_stops_reading_is_dropped():
    async with GatewaySimulator(rate=20_000, max_write_buffer=64 * 1024, bursts=False) as sim:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (HOST, sim.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"API\0" + struct.pack(">I", 9) + b"v157..176" + encode(71, 2, 9, ""))
        contract = [ES_ID, "", "", "", 0, "", "", "CME", "", "", "", ""]
        for req_id in range(1, 11):
            writer.write(encode(97, req_id, *contract, "BidAsk", 0, 0))
        await sim.wait_for(lambda: len(sim.subscriptions) == 10)
        await sim.wait_for(lambda: sim.connections == 0)  # never read a byte
        assert sim.subscriptions == []
        writer.close()


async def test_run_gateway_logs_its_address_and_stops_on_cancel():
    listening = asyncio.get_running_loop().create_future()

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "listening on" in record.getMessage() and not listening.done():
                listening.set_result(record.getMessage())

    logger = logging.getLogger("ibstream.gateway")
    handler, level = Catch(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    task = asyncio.create_task(run_gateway(HOST, 0, 1, 20.0))
    try:
        message = await asyncio.wait_for(listening, 5)
        port = int(message.rsplit(":", 1)[1])
        reader, writer = await raw_handshake(port, b"v157..176")
        assert (await reader.readexactly(4)) != b""
        writer.close()
    finally:
        task.cancel()
        logger.removeHandler(handler)
        logger.setLevel(level)
    with pytest.raises(asyncio.CancelledError):
        await task


# -- ib_async -----------------------------------------------------------------------------


async def test_ib_async_connects_resolves_and_streams(sim):
    client = ib_async.IB()
    started = time.perf_counter()
    await client.connectAsync(HOST, sim.port, clientId=4, timeout=5)
    try:
        assert time.perf_counter() - started < 1.0
        aapl = ib_async.Stock("AAPL", "SMART", "USD")
        es = ib_async.Contract(conId=ES_ID)
        assert await client.qualifyContractsAsync(aapl, es) == [aapl, es]  # fills exchange
        assert aapl.conId == AAPL_ID and es.localSymbol == "ESZ6"
        ticker = client.reqTickByTickData(es, "BidAsk")
        client.reqTickByTickData(es, "AllLast")
        ticks = await collect(ticker, 5, ib_async.TickByTickAllLast)
        assert any(isinstance(t, ib_async.TickByTickBidAsk) for t in ticks)
        assert all(on_grid(getattr(t, "price", None) or t.bidPrice, 0.25) for t in ticks)
        assert {s[3] for s in sim.subscriptions} == {"BidAsk", "AllLast"}
    finally:
        client.disconnect()
    await sim.wait_for(lambda: sim.connections == 0)


def test_builtin_contracts_are_exported():
    assert {c.symbol for c in BUILTIN_CONTRACTS} >= {"AAPL", "EUR", "ES", "MNQ", "NQ", "CL", "GC"}


# -- fidelity: validation, account limits, unsupported requests, contracts ---------------


async def test_market_data_without_exchange_gets_321(ib, sim):
    errors = errors_of(ib)
    ticker = ib.reqTickByTickData(Contract(conId=AAPL_ID), "Last")
    req_id, _, text = await next_error(errors, 321)
    assert req_id == ticker_req_id(ib, ticker) and "Please enter exchange" in text
    ib.reqMktData(Contract(conId=ES_ID))
    assert "Please enter exchange" in (await next_error(errors, 321))[2]
    assert sim.subscriptions == []


async def test_tick_by_tick_slots_are_per_account_and_freed_by_cancel():
    async with GatewaySimulator(seed=2, rate=200, bursts=False, tick_by_tick_slots=2) as sim:
        first, second = IB(), IB()
        await first.connectAsync(HOST, sim.port, clientId=1, timeout=5)
        await second.connectAsync(HOST, sim.port, clientId=2, timeout=5)
        try:
            errors = errors_of(second)
            aapl = Contract(conId=AAPL_ID, exchange="SMART")
            first.reqTickByTickData(aapl, "BidAsk")
            second.reqTickByTickData(aapl, "Last")
            await sim.wait_for(lambda: len(sim.subscriptions) == 2)
            second.reqTickByTickData(aapl, "AllLast")
            req_id, _, text = await next_error(errors, 10190)
            assert req_id > 0 and "Max number" in text
            assert len(sim.subscriptions) == 2
            first.cancelTickByTickData(aapl, "BidAsk")
            await sim.wait_for(lambda: len(sim.subscriptions) == 1)
            second.reqTickByTickData(aapl, "MidPoint")
            await sim.wait_for(lambda: {s[3] for s in sim.subscriptions} == {"Last", "MidPoint"})
        finally:
            first.disconnect()
            second.disconnect()


async def test_contracts_without_permission_get_354():
    async with GatewaySimulator(seed=2, bursts=False, no_permission={"CL", AAPL_ID}) as sim:
        client = IB()
        await client.connectAsync(HOST, sim.port, clientId=1, timeout=5)
        try:
            errors = errors_of(client)
            [cl] = await client.qualifyContractsAsync(Future("CL", "202701", exchange="NYMEX"))
            client.reqTickByTickData(cl, "Last")  # details still resolve: no data, though
            assert "not subscribed" in (await next_error(errors, 354))[2]
            client.reqTickByTickData(Contract(conId=AAPL_ID, exchange="SMART"), "BidAsk")
            await next_error(errors, 354)
            client.reqMktData(cl)
            await next_error(errors, 354)
            ticker = client.reqTickByTickData(Contract(conId=ES_ID, exchange="CME"), "Last")
            assert await collect(ticker, 1) and len(sim.subscriptions) == 1
        finally:
            client.disconnect()


async def test_requests_the_simulator_does_not_implement_get_an_error_not_silence(ib, sim):
    errors = errors_of(ib)
    es = Contract(conId=ES_ID, exchange="CME")
    bars = await asyncio.wait_for(
        ib.reqHistoricalDataAsync(es, "", "1 D", "1 min", "TRADES", True), 5
    )
    assert len(bars) == 0 and "not supported" in (await next_error(errors, 162))[2]
    scan = ScannerSubscription(
        instrument="STK", locationCode="STK.US.MAJOR", scanCode="HOT_BY_VOLUME"
    )
    assert len(await asyncio.wait_for(ib.reqScannerDataAsync(scan), 5)) == 0
    assert "not supported" in (await next_error(errors, 321))[2]
    trade = ib.placeOrder(es, MarketOrder("BUY", 1))
    req_id, _, text = await next_error(errors, 201)
    assert req_id == trade.order.orderId and "not supported" in text
    assert trade.orderStatus.status == "Cancelled"
    ib.reqMktData(es)  # valid, but the simulator streams tick-by-tick only
    assert "request type 1 is not supported" in (await next_error(errors, 321))[2]


async def test_fx_has_quotes_but_no_trades(ib, sim):
    eur = Contract(conId=EUR_ID, exchange="IDEALPRO")
    ticker = ib.reqTickByTickData(eur, "BidAsk")
    ib.reqTickByTickData(eur, "Last")  # accepted, as IB does, and never answered
    ib.reqTickByTickData(eur, "AllLast")
    await sim.wait_for(lambda: len(sim.subscriptions) == 3)
    ticks = await collect(ticker, 100, TickByTickBidAsk)
    assert sim.market(EUR_ID).trade_count > 10  # the market traded meanwhile
    assert not [t for t in ticks if isinstance(t, TickByTickAllLast)]


async def test_last_is_all_last_without_odd_lots_and_flagged_prints(ib, sim):
    aapl = Contract(conId=AAPL_ID, exchange="SMART")
    ticker = ib.reqTickByTickData(aapl, "AllLast")  # one Ticker gets both streams
    ib.reqTickByTickData(aapl, "Last")
    ticks = await collect(ticker, 300, TickByTickAllLast, timeout=10)
    last = [(t.price, t.size, t.exchange) for t in ticks if t.tickType == 1]
    all_last = [t for t in ticks if t.tickType == 2]
    plain = [(t.price, t.size, t.exchange) for t in all_last if not t.specialConditions]
    assert last and len(all_last) > len(last)
    start = plain.index(last[0])  # Last may have started a few trades later
    assert plain[start : start + len(last)] == last  # every Last trade is in AllLast, in order
    flagged = [t for t in all_last if t.specialConditions]
    assert {t.specialConditions for t in flagged} <= {"I", "4"} and flagged
    assert all(t.size < 100 for t in flagged if t.specialConditions == "I")


async def test_futures_list_live_expiries_latest_first_and_expired_on_request(ib, sim):
    listed = await ib.reqContractDetailsAsync(Future("ES", exchange="CME"))
    expiries = [d.contract.lastTradeDateOrContractMonth for d in listed]
    assert expiries == sorted(expiries, reverse=True) and len(expiries) >= 3
    assert min(expiries) == "20261218"  # the front month on the session day
    every = await ib.reqContractDetailsAsync(Future("ES", exchange="CME", includeExpired=True))
    assert len(every) == len(listed) + 1
    [cl] = await ib.reqContractDetailsAsync(Future("CL", "202701", exchange="NYMEX"))
    assert (cl.contract.localSymbol, cl.contractMonth) == ("CLF7", "202701")
    assert cl.tradingHours == "20261124:1700-20261125:1600;20261125:1700-20261126:1600"
