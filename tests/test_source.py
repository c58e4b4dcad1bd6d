"""IBSource against the gateway simulator over real TCP, through ib_insync and ib_async."""

import asyncio
import random
from datetime import date

import pytest

from ibstream.errors import ErrorCode, StreamError
from ibstream.gateway import GatewaySimulator
from ibstream.ib.contracts import parse_spec
from ibstream.ib.source import IBSource
from ibstream.model import TickType
from tests.conftest import Changes

ES_CON_ID = 637533641


@pytest.fixture
async def sim():
    gateway = GatewaySimulator(port=0, seed=3, rate=300.0, bursts=False)
    await gateway.start()
    yield gateway
    await gateway.stop()


class Collector(Changes):
    """Records what the source emits; `until` awaits a condition on it."""

    def __init__(self, source: IBSource):
        super().__init__()
        self.ticks, self.events = [], []
        source.on_tick = self._add_tick
        source.on_event = self._add_event

    def _add_tick(self, tick):
        self.ticks.append(tick)
        self.notify()

    def _add_event(self, event):
        self.events.append(event)
        self.notify()

    def statuses(self):
        return [e.status for e in self.events]


async def started(sim, library=None, **kw):
    source = IBSource(
        "127.0.0.1", sim.port, client_id=random.randint(1, 10**6), library=library, **kw
    )
    collector = Collector(source)
    await source.start(wait=10)
    return source, collector


@pytest.mark.parametrize("library", ["ib_insync", "ib_async"])
async def test_resolves_and_streams_all_four_tick_types(sim, library):
    source, got = await started(sim, library)
    try:
        assert source.status()["connected"] and source.status()["library"] == library
        es = await source.resolve("ES")
        assert (es.contract_id, es.sec_type, es.min_tick) == (ES_CON_ID, "FUT", 0.25)
        for tick_type in TickType:
            source.subscribe(es, tick_type)
        await got.until(lambda: {t.tick_type for t in got.ticks} == set(TickType))
        assert len(sim.subscriptions) == 4
        stamps = [t.recv_ns for t in got.ticks]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        quote = next(t for t in got.ticks if t.tick_type is TickType.BID_ASK)
        assert quote.ask_price > quote.bid_price and quote.ask_price % 0.25 == 0
        trade = next(t for t in got.ticks if t.tick_type is TickType.LAST)
        assert trade.price > 0 and trade.size > 0
    finally:
        await source.stop()


async def test_contract_specs_resolve_and_unknown_is_contract_not_found(sim):
    source, _ = await started(sim)
    try:
        assert (await source.resolve("AAPL")).contract_id == 265598
        assert (await source.resolve(265598)).symbol == "AAPL"
        assert (await source.resolve("EURUSD")).contract_id == 12087792
        assert (await source.resolve("MNQ")).local_symbol == "MNQZ6"
        assert [c.contract_id for c in await source.search("AAPL")] == [265598]
        with pytest.raises(StreamError) as info:
            await source.resolve("NOSUCH")
        assert info.value.code is ErrorCode.CONTRACT_NOT_FOUND and "NOSUCH" in info.value.message
        with pytest.raises(StreamError) as info:
            await source.resolve(999999999)
        assert info.value.code is ErrorCode.CONTRACT_NOT_FOUND
    finally:
        await source.stop()


async def test_subscribe_is_once_upstream_and_unsubscribe_cancels(sim):
    source, _ = await started(sim)
    try:
        es = await source.resolve(ES_CON_ID)
        source.subscribe(es, TickType.LAST)
        source.subscribe(es, TickType.LAST)
        await sim.wait_for(lambda: len(sim.subscriptions) == 1)
        source.unsubscribe(es.contract_id, TickType.LAST)
        await sim.wait_for(lambda: sim.subscriptions == [])
        assert source.upstream == set()
    finally:
        await source.stop()


async def test_rejected_subscription_becomes_stream_error(sim):
    source, got = await started(sim)
    try:
        es = await source.resolve("ES")
        sim.fail_next("tick_by_tick", 10190)
        source.subscribe(es, TickType.BID_ASK)
        await got.until(lambda: "stream_error" in got.statuses())
        event = got.events[-1]
        assert event.key == (ES_CON_ID, TickType.BID_ASK)
        assert (
            event.error.code is ErrorCode.RATE_LIMIT_EXCEEDED
            and event.error.details["ib_code"] == 10190
        )
        assert source.upstream == set()
    finally:
        await source.stop()


async def test_advisory_does_not_end_the_stream(sim):
    source, got = await started(sim)
    try:
        es = await source.resolve("ES")
        source.subscribe(es, TickType.LAST)
        await sim.wait_for(lambda: len(sim.subscriptions) == 1)
        client_id, req_id, _, _ = sim.subscriptions[0]
        sim.send_error(10167, req_id=req_id)
        await got.until(lambda: "ib_advisory" in got.statuses())
        n = len(got.ticks)
        await got.until(lambda: len(got.ticks) > n + 5)
        assert source.upstream == {(ES_CON_ID, TickType.LAST)}
    finally:
        await source.stop()


async def test_reconnects_through_drops_and_refusals_and_resubscribes(sim):
    source, got = await started(sim, connect_timeout=2.0)
    try:
        es = await source.resolve("ES")
        source.subscribe(es, TickType.LAST)
        source.subscribe(es, TickType.BID_ASK)
        for round_ in range(3):
            await got.until(lambda: len(got.ticks) > 20)
            got.ticks.clear()
            assert await sim.drop_connections() == 1
            await got.until(lambda r=round_: got.statuses().count("resumed") == r + 1)
        sim.refuse_connections(2.0)
        await sim.drop_connections()
        await got.until(lambda: got.statuses().count("resumed") == 4, timeout=20)
        assert sim.refused_connections >= 1
        got.ticks.clear()
        await got.until(
            lambda: {t.tick_type for t in got.ticks} == {TickType.LAST, TickType.BID_ASK}
        )
        assert got.statuses().count("ib_disconnected") == 4 and source.reconnects == 4
        assert sorted(s[3] for s in sim.subscriptions) == ["BidAsk", "Last"]
    finally:
        await source.stop()


async def test_connectivity_codes_become_infos_and_1101_resubscribes(sim):
    source, got = await started(sim)
    try:
        es = await source.resolve("ES")
        source.subscribe(es, TickType.LAST)
        await sim.wait_for(lambda: len(sim.subscriptions) == 1)
        sim.send_error(1100)
        await got.until(lambda: "ib_disconnected" in got.statuses())
        sim.send_error(1101)
        await got.until(lambda: "resumed" in got.statuses())
        await sim.wait_for(lambda: len(sim.subscriptions) == 1)
        n = len(got.ticks)
        await got.until(lambda: len(got.ticks) > n + 5)
    finally:
        await source.stop()


async def test_wait_connected_names_the_address_when_nothing_listens():
    source = IBSource("127.0.0.1", 1, client_id=5)
    try:
        with pytest.raises(StreamError) as info:
            await source.start(wait=0.5)
        assert info.value.code is ErrorCode.CONNECTION_ERROR and "127.0.0.1:1" in info.value.message
    finally:
        await source.stop()


async def test_stop_during_a_connect_closes_the_socket_at_once():
    """A gateway that accepts but never answers the handshake: stop() must not leave the
    connect attempt running (it would hold the client id once it completed)."""
    accepted, closed = asyncio.Event(), asyncio.Event()

    async def silent(reader, writer):
        accepted.set()
        await reader.read()  # returns at EOF, when the client closes its socket
        closed.set()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    source = IBSource("127.0.0.1", port, client_id=3, connect_timeout=30)
    try:
        await source.start()
        await asyncio.wait_for(accepted.wait(), 10)
        await source.stop()
        await asyncio.wait_for(closed.wait(), 2)
        assert not source.ib.isConnected()
    finally:
        server.close()
        await server.wait_closed()


async def test_lookup_that_gets_no_answer_is_connection_error(sim):
    source, _ = await started(sim, request_timeout=1e-6)
    try:
        with pytest.raises(StreamError) as info:
            await source.resolve("AAPL")
        assert info.value.code is ErrorCode.CONNECTION_ERROR and "retry" in info.value.message
    finally:
        await source.stop()


async def test_front_month_is_picked_on_the_gateway_clock_and_expiry_specs_select_one(sim):
    source, _ = await started(sim)
    try:
        fronts = {spec: (await source.resolve(spec)).local_symbol for spec in FRONTS}
        assert fronts == FRONTS
        assert (await source.resolve("ES:FUT:CME:202703")).local_symbol == "ESH7"
        assert (await source.resolve("ES:FUT:CME:USD:20270618")).local_symbol == "ESM7"
    finally:
        await source.stop()
    later = GatewaySimulator(port=0, seed=3, bursts=False, session_date=date(2026, 12, 19))
    async with later:
        source, _ = await started(later)
        try:  # the host's date has not moved: only the gateway's clock says ESZ6 expired
            assert (await source.resolve("ES")).local_symbol == "ESH7"
        finally:
            await source.stop()


FRONTS = {"ES": "ESZ6", "MNQ": "MNQZ6", "NQ": "NQZ6", "CL": "CLF7", "GC": "GCZ6"}


@pytest.mark.parametrize(
    "ib_code, code",
    [(354, "PERMISSION_DENIED"), (162, "RATE_LIMIT_EXCEEDED"), (321, "INVALID_MESSAGE")],
)
@pytest.mark.parametrize("library", ["ib_insync", "ib_async"])
async def test_lookup_failure_keeps_ibs_code(sim, library, ib_code, code):
    source, _ = await started(sim, library)
    try:
        sim.fail_next("contract_details", ib_code)
        with pytest.raises(StreamError) as info:
            await source.resolve("AAPL")
        assert (info.value.code, info.value.details["ib_code"]) == (code, ib_code)
        assert f"IB error {ib_code}" in info.value.message and "AAPL" in info.value.message
        with pytest.raises(StreamError) as info:  # and a plain miss is IB's 200
            await source.resolve("NOSUCH")
        assert info.value.details["ib_code"] == 200
    finally:
        await source.stop()


async def test_concurrent_lookups_share_one_clock_request():
    """ib_insync keeps one pending reqCurrentTime: concurrent front-month picks must not
    orphan each other (and fall back to the host's date, which says ESZ6 here)."""
    async with GatewaySimulator(
        port=0, seed=3, bursts=False, session_date=date(2026, 12, 19)
    ) as gw:
        source, _ = await started(gw, request_timeout=30)
        try:
            picks = await asyncio.gather(*(source.resolve(s) for s in ("ES", "ES", "NQ", "GC")))
            assert [p.local_symbol for p in picks] == ["ESH7", "ESH7", "NQH7", "GCZ6"]
        finally:
            await source.stop()


@pytest.mark.parametrize(
    "spec, expiry",
    [("ES:FUT:CME:202703", "202703"), ("es:fut:cme:usd:20270319", "20270319"), ("ES:FUT", None)],
)
def test_specs_may_name_an_expiry(spec, expiry):
    assert parse_spec(spec).get("lastTradeDateOrContractMonth") == expiry


@pytest.mark.parametrize("spec", ["ES:FUT:CME:2027", "ES:FUT:CME:USD:202703:X", "ES:FUT:CME:USD:1"])
def test_malformed_expiry_names_the_form(spec):
    with pytest.raises(StreamError) as info:
        parse_spec(spec)
    assert info.value.code is ErrorCode.CONTRACT_NOT_FOUND and "YYYYMM" in info.value.message
