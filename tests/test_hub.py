"""Hub and subscriber behaviour in isolation: fan-out, sequences, limits, resume, overflow,
and the grace period an idle channel lives on for.

The source here is a plain recorder (the real IBSource is exercised end to end elsewhere).
Hubs that test an immediate upstream cancel run with grace_seconds=0.
"""

import asyncio

import orjson
import pytest

from ibstream.errors import ErrorCode, StreamError
from ibstream.ib.source import SourceEvent
from ibstream.model import ContractInfo, Tick, TickType
from ibstream.server.hub import Hub, StreamKey
from ibstream.server.subscriber import Subscriber, SubscriberClosed

ES = ContractInfo(637533641, "ES", "FUT", "CME", "USD", "ESZ6", 0.25)


class RecordingSource:
    def __init__(self):
        self.upstream: list[tuple[int, TickType]] = []
        self.calls: list[str] = []
        self.cancelled = asyncio.Event()

    async def resolve(self, spec):
        return ES

    def subscribe(self, contract, tick_type):
        self.calls.append("sub")
        self.upstream.append((contract.contract_id, tick_type))

    def unsubscribe(self, contract_id, tick_type):
        self.calls.append("unsub")
        self.upstream.remove((contract_id, tick_type))
        self.cancelled.set()


def trade(price=5900.25, size=1.0):
    return Tick(ES.contract_id, TickType.LAST, 1, price=price, size=size)


def quote():
    return Tick(ES.contract_id, TickType.BID_ASK, 1, bid_price=5900.0, ask_price=5900.25)


async def drain(sub, n):
    return [orjson.loads((await sub.get()).payload) for _ in range(n)]


async def test_one_upstream_for_many_subscribers_and_last_out_cancels():
    source = RecordingSource()
    hub = Hub(source, grace_seconds=0)
    subs = [Subscriber(hub) for _ in range(50)]
    for sub in subs:
        await sub.subscribe("ES", [TickType.LAST])
    assert source.upstream == [(ES.contract_id, TickType.LAST)]
    hub.publish(trade())
    for sub in subs:
        (msg,) = await drain(sub, 1)
        assert msg["data"]["sequence"] == 1 and msg["stream_id"] in sub.streams
    for sub in subs[:-1]:
        sub.close()
    assert source.calls == ["sub"]
    subs[-1].unsubscribe_all()
    assert source.calls == ["sub", "unsub"] and source.upstream == []


async def test_limit_completes_stream_with_counters():
    hub = Hub(RecordingSource())
    sub = Subscriber(hub)
    (handle,) = await sub.subscribe("ES", [TickType.LAST], limit=3)
    for i in range(5):
        hub.publish(trade(size=i + 1))
    msgs = await drain(sub, 4)
    assert [m["type"] for m in msgs] == ["tick", "tick", "tick", "complete"]
    assert msgs[-1]["data"] | {"duration_seconds": 0} == {
        "reason": "limit_reached",
        "total_ticks": 3,
        "final_sequence": 3,
        "duration_seconds": 0,
    }
    assert handle.stream_id not in sub.streams and sub.queued == 0


async def test_timeout_completes_stream():
    hub = Hub(RecordingSource(), grace_seconds=0)
    sub = Subscriber(hub)
    await sub.subscribe("ES", [TickType.LAST], timeout=0.05)
    msg = orjson.loads((await asyncio.wait_for(sub.get(), 5)).payload)
    assert msg["type"] == "complete" and msg["data"]["reason"] == "timeout"
    assert hub.channels == {}


async def test_resume_replays_ring_after_sequence_and_sequences_never_restart():
    hub = Hub(RecordingSource(), ring_size=5)
    keeper = Subscriber(hub)
    await keeper.subscribe("ES", [TickType.LAST])
    for _ in range(8):
        hub.publish(trade())
    late = Subscriber(hub)
    handles = await late.subscribe("ES", [TickType.LAST])
    late.replay(handles, {TickType.LAST: 6})
    assert [m["data"]["sequence"] for m in await drain(late, 2)] == [7, 8]
    keeper.close()
    late.close()
    again = Subscriber(hub)
    await again.subscribe("ES", [TickType.LAST])
    hub.publish(trade())
    assert (await drain(again, 1))[0]["data"]["sequence"] == 9


async def resumed(hub, position):
    sub = Subscriber(hub)
    sub.replay(await sub.subscribe("ES", [TickType.LAST]), {TickType.LAST: position})
    return sub


async def test_resume_older_than_the_ring_reports_the_missing_range():
    hub = Hub(RecordingSource(), ring_size=5)
    keeper = Subscriber(hub)
    await keeper.subscribe("ES", [TickType.LAST])
    for _ in range(10):
        hub.publish(trade())
    msgs = await drain(await resumed(hub, 2), 6)
    assert msgs[0]["type"] == "info" and msgs[0]["data"]["status"] == "gap"
    assert msgs[0]["data"]["details"] == {
        "reason": "not_buffered",
        "first_missing": 3,
        "last_missing": 5,
    }
    assert [m["data"]["sequence"] for m in msgs[1:]] == [6, 7, 8, 9, 10]


async def test_resume_after_the_channel_was_idle_reports_unreceived_ticks():
    hub = Hub(RecordingSource(), grace_seconds=0)
    first = Subscriber(hub)
    await first.subscribe("ES", [TickType.LAST])
    hub.publish(trade())
    first.close()  # upstream cancelled: whatever IB trades now is never received
    msgs = await drain(await resumed(hub, 1), 1)
    assert (
        msgs[0]["data"]["status"] == "gap"
        and msgs[0]["data"]["details"]["reason"] == "upstream_idle"
    )


async def test_resume_beyond_the_last_sequence_says_so_and_streams_live():
    hub = Hub(RecordingSource())
    sub = await resumed(hub, 500)
    (msg,) = await drain(sub, 1)
    assert (
        msg["data"]["details"]["reason"] == "unknown_sequence"
        and "restart" in msg["data"]["message"]
    )
    hub.publish(trade())
    assert (await drain(sub, 1))[0]["data"]["sequence"] == 1


async def test_replay_of_a_full_ring_does_not_trip_the_slow_consumer_limit():
    hub = Hub(RecordingSource(), ring_size=100)
    keeper = Subscriber(hub)
    await keeper.subscribe("ES", [TickType.LAST])
    for _ in range(100):
        hub.publish(trade())
    late = Subscriber(hub, queue_size=10)
    late.replay(await late.subscribe("ES", [TickType.LAST]), {TickType.LAST: 0})
    for _ in range(5):
        hub.publish(trade())  # live ticks on top of the replay: within the live budget
    assert late.closed is None
    assert [m["data"]["sequence"] for m in await drain(late, 105)] == list(range(1, 106))


async def test_overflow_reports_what_was_sent_not_what_was_queued():
    hub = Hub(RecordingSource())
    sub = Subscriber(hub, queue_size=5)
    await sub.subscribe("ES", [TickType.LAST])
    for _ in range(3):
        hub.publish(trade())
    await drain(sub, 2)
    for _ in range(10):
        hub.publish(trade())
    error = (await drain(sub, 1))[0]
    assert error["data"]["code"] == ErrorCode.SLOW_CONSUMER
    assert error["data"]["details"]["last_sent"] == {"last": 2}
    (stream,) = error["data"]["details"]["streams"]
    assert stream == {
        "stream_id": stream["stream_id"],
        "contract_id": ES.contract_id,
        "tick_type": "last",
        "last_sent": 2,
    }


async def test_overflow_names_every_stream_of_several_contracts():
    """Two contracts share a tick type: `streams` keeps both; `last_sent`, one {tick_type: n},
    could only hold one of them, so it is left out."""
    nq = ContractInfo(637533450, "MNQ", "FUT", "CME", "USD", "MNQZ6", 0.25)
    source = RecordingSource()

    async def resolve(spec):
        return ES if spec == "ES" else nq

    source.resolve = resolve
    hub = Hub(source)
    sub = Subscriber(hub, queue_size=6)
    (es,) = await sub.subscribe("ES", [TickType.BID_ASK])
    (mnq,) = await sub.subscribe("MNQ", [TickType.BID_ASK])

    def quote_of(contract):
        return Tick(contract.contract_id, TickType.BID_ASK, 1, bid_price=1.0, ask_price=2.0)

    for contract, n in ((ES, 3), (nq, 2)):
        for _ in range(n):
            hub.publish(quote_of(contract))
    await drain(sub, 5)
    for _ in range(7):
        hub.publish(quote_of(ES))
    (error,) = await drain(sub, 1)
    assert error["data"]["code"] == ErrorCode.SLOW_CONSUMER
    details = error["data"]["details"]
    assert "last_sent" not in details
    assert sorted(
        (s["stream_id"], s["contract_id"], s["last_sent"]) for s in details["streams"]
    ) == sorted([(es.stream_id, ES.contract_id, 3), (mnq.stream_id, nq.contract_id, 2)])


async def test_a_handle_that_ended_during_subscribe_never_rejoins():
    source = RecordingSource()
    hub = Hub(source, grace_seconds=0)
    sub = Subscriber(hub)
    (handle,) = await sub.subscribe("ES", [TickType.LAST])
    sub.close()
    hub.attach(handle)
    assert hub.channels == {} and source.upstream == []


async def test_slow_consumer_is_closed_and_memory_bounded_others_unaffected():
    hub = Hub(RecordingSource())
    slow, fast = Subscriber(hub, queue_size=100), Subscriber(hub, queue_size=100)
    await slow.subscribe("ES", [TickType.LAST])
    await fast.subscribe("ES", [TickType.LAST])
    for i in range(1000):
        hub.publish(trade())
        assert slow.queued <= 100
        if i % 50 == 0:
            await drain(fast, fast.queued)
    assert fast.closed is None and len(fast.streams) == 1
    error = orjson.loads((await slow.get()).payload)
    assert error["type"] == "error" and error["data"]["code"] == ErrorCode.SLOW_CONSUMER
    with pytest.raises(SubscriberClosed):
        await slow.get()
    assert len(hub.channels[(ES.contract_id, TickType.LAST)].members) == 1


async def test_stream_cap_is_rate_limit_exceeded():
    sub = Subscriber(Hub(RecordingSource()), max_streams=3)
    await sub.subscribe("ES", [TickType.LAST, TickType.BID_ASK])
    with pytest.raises(Exception) as info:
        await sub.subscribe("ES", [TickType.MID_POINT, TickType.ALL_LAST])
    assert info.value.code is ErrorCode.RATE_LIMIT_EXCEEDED
    assert len(sub.streams) == 2


async def test_grace_keeps_upstream_and_numbers_ticks_until_expiry():
    source = RecordingSource()
    hub = Hub(source, grace_seconds=0.2)
    key = StreamKey(ES.contract_id, TickType.LAST)
    lone = Subscriber(hub)
    await lone.subscribe("ES", [TickType.LAST])
    hub.publish(trade())
    assert (await drain(lone, 1))[0]["data"]["sequence"] == 1
    lone.close()
    assert source.calls == ["sub"] and source.upstream == [key]  # still held upstream
    (idle,) = hub.stats()["channels"]
    assert idle["clients"] == 0 and idle["idle_until"].endswith("Z")
    assert hub.stats()["idle_streams"] == 1
    pending = hub.channels[key].expiry
    for _ in range(3):
        hub.publish(trade())  # IB keeps sending while nobody listens: numbered into the ring
    back = await resumed(hub, 1)
    assert pending.cancelled() and hub.channels[key].expiry is None  # the close was called off
    msgs = await drain(back, 3)
    assert [(m["type"], m["data"]["sequence"]) for m in msgs] == [
        ("tick", 2),
        ("tick", 3),
        ("tick", 4),
    ]
    assert hub.stats()["channels"][0]["idle_until"] is None
    back.close()
    await asyncio.wait_for(source.cancelled.wait(), 5)  # grace expires with nobody back
    assert source.calls == ["sub", "unsub"] and hub.channels == {}
    later = await drain(await resumed(hub, 4), 1)  # the channel reopened: IB's ticks are lost
    assert later[0]["data"]["details"]["reason"] == "upstream_idle"


async def test_hub_close_cancels_grace_timers_and_every_upstream():
    source = RecordingSource()
    hub = Hub(source, grace_seconds=30)
    idle, active = Subscriber(hub), Subscriber(hub)
    await idle.subscribe("ES", [TickType.BID_ASK])
    await active.subscribe("ES", [TickType.LAST])
    idle.close()
    pending = hub.channels[StreamKey(ES.contract_id, TickType.BID_ASK)].expiry
    hub.close()
    assert pending.cancelled() and hub.channels == {} and source.upstream == []
    active.close()  # after teardown a leaving member changes nothing, and arms no timer
    assert source.calls == ["sub", "sub", "unsub", "unsub"]
    assert hub.channels == {}


async def test_stream_error_ends_the_channel_without_grace():
    source = RecordingSource()
    hub = Hub(source, grace_seconds=30)
    sub = Subscriber(hub)
    (handle,) = await sub.subscribe("ES", [TickType.LAST])
    error = StreamError(ErrorCode.PERMISSION_DENIED, "IB error 354")
    hub.on_source_event(SourceEvent("stream_error", error.message, handle_key(handle), error))
    msgs = await drain(sub, 2)
    assert [m["type"] for m in msgs] == ["error", "complete"]
    assert hub.channels == {}  # no idle channel left whose upstream IB already ended
    again = Subscriber(hub)
    await again.subscribe("ES", [TickType.LAST])
    assert source.calls == ["sub", "unsub", "sub"]  # a new subscribe asks IB again


def handle_key(handle):
    return (handle.contract.contract_id, handle.tick_type)


async def test_resume_across_an_ib_outage_reports_the_lost_ticks():
    hub = Hub(RecordingSource(), grace_seconds=30)
    lone = Subscriber(hub)
    await lone.subscribe("ES", [TickType.LAST])
    for _ in range(2):
        hub.publish(trade())
    lone.close()
    hub.on_source_event(SourceEvent("ib_disconnected", "connection to IB lost; reconnecting"))
    hub.on_source_event(SourceEvent("resumed", "IB connection restored; streams resumed"))
    for _ in range(2):
        hub.publish(trade())
    msgs = await drain(await resumed(hub, 2), 3)
    assert msgs[0]["data"]["status"] == "gap"
    assert msgs[0]["data"]["details"] == {"reason": "ib_disconnected", "after_sequences": [2]}
    assert [m["data"]["sequence"] for m in msgs[1:]] == [3, 4]
    (msg,) = await drain(await resumed(hub, 3), 1)  # after the outage: nothing was lost
    assert msg["type"] == "tick" and msg["data"]["sequence"] == 4


async def test_overflow_of_a_resumed_stream_reports_its_resume_position():
    hub = Hub(RecordingSource())
    keeper = Subscriber(hub)
    await keeper.subscribe("ES", [TickType.LAST, TickType.BID_ASK])
    for _ in range(10):
        hub.publish(trade())
        hub.publish(quote())
    late = Subscriber(hub, queue_size=3)
    handles = await late.subscribe("ES", [TickType.LAST, TickType.BID_ASK])
    late.replay(handles, {TickType.LAST: 4})  # 6 replayed ticks queued, none sent yet
    for _ in range(4):
        hub.publish(quote())
    msgs = await drain(late, 1)
    assert msgs[0]["data"]["code"] == ErrorCode.SLOW_CONSUMER
    # last: what the client already had; bid_ask (not resumed): where it joined
    assert msgs[0]["data"]["details"]["last_sent"] == {"last": 4, "bid_ask": 10}


async def test_overflow_after_a_resume_beyond_the_stream_reports_where_it_joined():
    hub = Hub(RecordingSource())
    keeper = Subscriber(hub)
    await keeper.subscribe("ES", [TickType.LAST])
    for _ in range(5):
        hub.publish(trade())
    late = Subscriber(hub, queue_size=2)
    late.replay(await late.subscribe("ES", [TickType.LAST]), {TickType.LAST: 500})
    for _ in range(3):
        hub.publish(trade())
    (error,) = await drain(late, 1)  # the overflow dropped the queued gap info and ticks
    assert error["data"]["code"] == ErrorCode.SLOW_CONSUMER
    assert error["data"]["details"]["last_sent"] == {"last": 5}


# --- batched streams (config.batch_ms) --------------------------------------------------


async def test_batched_stream_sends_one_ticks_message_per_interval():
    hub = Hub(RecordingSource())
    sub = Subscriber(hub)
    (handle,) = await sub.subscribe("ES", [TickType.LAST], batch_ms=20)
    for i in range(10):
        hub.publish(trade(size=i + 1))
    assert sub.queued == 0  # held until the batch is due
    item = await sub.get()  # the subscriber's timer sends it
    msg = orjson.loads(item.payload)
    assert msg["type"] == "ticks" and "stream_id" not in msg
    assert (item.event, item.spans, item.ticks) == ("ticks", {handle.stream_id: [1, 10]}, 10)
    ticks = msg["data"]["ticks"]
    assert {t["stream_id"] for t in ticks} == {handle.stream_id}
    assert [t["sequence"] for t in ticks] == list(range(1, 11))
    assert [t["size"] for t in ticks] == [float(i + 1) for i in range(10)]
    assert all(t["timestamp"].endswith("Z") and t["tick_type"] == "last" for t in ticks)
    hub.publish(trade())
    assert [t["sequence"] for t in (await drain(sub, 1))[0]["data"]["ticks"]] == [11]


async def test_batched_item_is_the_tick_data_plus_its_stream_and_timestamp():
    hub = Hub(RecordingSource())
    plain, batched = Subscriber(hub), Subscriber(hub)
    await plain.subscribe("ES", [TickType.LAST])
    (handle,) = await batched.subscribe("ES", [TickType.LAST], batch_ms=5)
    hub.publish(trade())
    (tick,) = await drain(plain, 1)
    (batch,) = await drain(batched, 1)
    item = {"stream_id": handle.stream_id, **tick["data"], "timestamp": tick["timestamp"]}
    assert batch["data"]["ticks"] == [item]


async def test_batched_limit_is_exact_and_flushes_at_once():
    hub = Hub(RecordingSource())
    sub = Subscriber(hub)
    await sub.subscribe("ES", [TickType.LAST], limit=7, batch_ms=1000)
    for _ in range(10):
        hub.publish(trade())
    batch, done = sub.get_nowait(), sub.get_nowait()  # no waiting for the 1 s interval
    assert batch is not None and done is not None and sub.queued == 0
    assert [t["sequence"] for t in orjson.loads(batch.payload)["data"]["ticks"]] == [*range(1, 8)]
    complete = orjson.loads(done.payload)
    assert complete["type"] == "complete" and complete["data"]["total_ticks"] == 7


async def test_a_full_batch_goes_out_without_waiting():
    hub = Hub(RecordingSource())
    sub = Subscriber(hub)
    sub.batcher.max_ticks = 50
    await sub.subscribe("ES", [TickType.LAST], batch_ms=1000)
    for _ in range(120):
        hub.publish(trade())
    sizes = []
    while (item := sub.get_nowait()) is not None:
        sizes.append(len(orjson.loads(item.payload)["data"]["ticks"]))
    assert sizes == [50, 50]  # the last 20 wait for their interval


async def test_slow_batched_consumer_is_caught_by_ticks_not_frames():
    hub = Hub(RecordingSource())
    sub = Subscriber(hub, queue_size=100)
    sub.batcher.max_ticks = 60
    await sub.subscribe("ES", [TickType.LAST], batch_ms=1000)
    for _ in range(120):
        hub.publish(trade())
    assert sub.closed is None and sub.queued == 2  # 120 ticks in 2 frames: over the limit
    for _ in range(60):
        hub.publish(trade())  # a third frame would be 180 ticks behind: closed
    assert sub.closed is not None and sub.closed.code is ErrorCode.SLOW_CONSUMER
    (error,) = await drain(sub, 1)
    assert error["data"]["code"] == ErrorCode.SLOW_CONSUMER
    assert error["data"]["details"]["last_sent"] == {"last": 0}


async def test_stream_messages_come_after_the_ticks_before_them():
    hub = Hub(RecordingSource())
    sub = Subscriber(hub)
    await sub.subscribe("ES", [TickType.LAST], batch_ms=1000)
    for _ in range(3):
        hub.publish(trade())
    hub.on_source_event(SourceEvent("ib_disconnected", "connection to IB lost; reconnecting"))
    sub.close_streams("server_shutdown")
    msgs = await drain(sub, 3)
    assert [m["type"] for m in msgs] == ["ticks", "info", "complete"]
    assert msgs[2]["data"]["total_ticks"] == 3


async def test_batched_resume_replays_the_backlog_in_batches_outside_the_live_limit():
    hub = Hub(RecordingSource(), ring_size=200)
    keeper = Subscriber(hub)
    await keeper.subscribe("ES", [TickType.LAST])
    for _ in range(150):
        hub.publish(trade())
    late = Subscriber(hub, queue_size=10)
    late.batcher.max_ticks = 100
    handles = await late.subscribe("ES", [TickType.LAST], batch_ms=1000)
    late.replay(handles, {TickType.LAST: 20})
    replayed = [late.get_nowait(), late.get_nowait()]
    assert late.get_nowait() is None and late.closed is None
    sid = handles[0].stream_id
    assert [(i.replayed, i.ticks, i.spans) for i in replayed] == [  # type: ignore[union-attr]
        (True, 100, {sid: [21, 120]}),
        (True, 30, {sid: [121, 150]}),
    ]
    hub.publish(trade())
    live = orjson.loads((await late.get()).payload)
    assert [t["sequence"] for t in live["data"]["ticks"]] == [151]


async def test_streams_of_different_intervals_share_one_frame_in_arrival_order():
    hub = Hub(RecordingSource())
    sub = Subscriber(hub)
    (slow,) = await sub.subscribe("ES", [TickType.LAST], batch_ms=1000)
    (fast,) = await sub.subscribe("ES", [TickType.BID_ASK], batch_ms=10)
    for publish in (quote, trade, trade, quote):
        hub.publish(publish())
    frame = await sub.get()  # due at the shorter interval: no tick waits past its own
    items = orjson.loads(frame.payload)["data"]["ticks"]
    assert [(t["stream_id"], t["sequence"]) for t in items] == [
        (fast.stream_id, 1),
        (slow.stream_id, 1),
        (slow.stream_id, 2),
        (fast.stream_id, 2),
    ]
    assert frame.spans == {fast.stream_id: [1, 2], slow.stream_id: [1, 2]}
    assert sub.get_nowait() is None
    hub.publish(trade())
    sub.close()
    assert sub.batcher._timer is None and len(sub.batcher) == 0


async def test_unsubscribe_drops_what_is_queued_for_the_stream_and_its_summary_says_so():
    hub = Hub(RecordingSource())
    sub = Subscriber(hub)
    sub.batcher.max_ticks = 3
    (handle,) = await sub.subscribe("ES", [TickType.LAST], batch_ms=1000)
    (plain,) = await sub.subscribe("ES", [TickType.BID_ASK])
    for _ in range(4):
        hub.publish(trade())  # a full frame of 3 queued, 1 pending
        hub.publish(quote())
    assert (sub.queued, sub.queued_ticks, len(sub.batcher)) == (5, 7, 1)
    summary = sub.unsubscribe(handle.stream_id)
    assert (summary["total_ticks"], summary["final_sequence"]) == (0, 0)
    assert (sub.queued, sub.queued_ticks, len(sub.batcher)) == (4, 4, 0)
    assert sub.batcher._timer is None  # nothing left behind for the timer
    msgs = await drain(sub, 4)
    assert {m["type"] for m in msgs} == {"tick"}  # the other stream's ticks stay


# --- bounded replays ------------------------------------------------------------------------


def timed(tick: Tick, ns: int) -> Tick:
    tick.recv_ns = ns
    return tick


async def test_a_replay_of_two_streams_comes_in_arrival_order_cut_to_the_replay_bound():
    hub = Hub(RecordingSource())
    keeper = Subscriber(hub)
    await keeper.subscribe("ES", [TickType.LAST, TickType.BID_ASK])
    for n in range(10):  # quote, trade, quote, trade ...: 10 each
        hub.publish(timed(quote(), 2 * n + 1))
        hub.publish(timed(trade(), 2 * n + 2))
    late = Subscriber(hub, replay_size=6)
    handles = await late.subscribe("ES", [TickType.LAST, TickType.BID_ASK])
    late.replay(handles, {TickType.LAST: 0, TickType.BID_ASK: 0})
    assert late.queued_ticks == 6 + 2  # the bound, and a gap info per stream
    (again,) = await late.subscribe("ES", [TickType.LAST])
    late.replay([again], {TickType.LAST: 5})  # the first replay is not sent yet: no room
    msgs = await drain(late, late.queued)
    gaps = {m["stream_id"]: m["data"]["details"] for m in msgs if m["type"] == "info"}
    gap = {"reason": "replay_limit", "first_missing": 1, "last_missing": 7}
    assert gaps == {
        handles[0].stream_id: gap,
        handles[1].stream_id: gap,
        again.stream_id: {**gap, "first_missing": 6, "last_missing": 10},
    }
    ticks = [m["data"] for m in msgs if m["type"] == "tick"]
    assert [(t["tick_type"], t["sequence"]) for t in ticks] == [  # the newest 6, interleaved
        ("bid_ask", 8),
        ("last", 8),
        ("bid_ask", 9),
        ("last", 9),
        ("bid_ask", 10),
        ("last", 10),
    ]
    assert late.queued_ticks == 0
