"""Hub and subscriber behaviour in isolation: fan-out, sequences, limits, resume, overflow.

The source here is a plain recorder (the real IBSource is exercised end to end elsewhere).
"""

import asyncio

import orjson
import pytest

from ibstream.errors import ErrorCode
from ibstream.hub import Hub
from ibstream.model import ContractInfo, Tick, TickType
from ibstream.subscriber import Subscriber, SubscriberClosed

ES = ContractInfo(637533641, "ES", "FUT", "CME", "USD", "ESZ6", 0.25)


class RecordingSource:
    def __init__(self):
        self.upstream: list[tuple[int, TickType]] = []
        self.calls: list[str] = []

    async def resolve(self, spec):
        return ES

    def subscribe(self, contract, tick_type):
        self.calls.append("sub")
        self.upstream.append((contract.contract_id, tick_type))

    def unsubscribe(self, contract_id, tick_type):
        self.calls.append("unsub")
        self.upstream.remove((contract_id, tick_type))


def trade(price=5900.25, size=1.0):
    return Tick(ES.contract_id, TickType.LAST, 1, price=price, size=size)


async def drain(sub, n):
    return [orjson.loads((await sub.get()).payload) for _ in range(n)]


async def test_one_upstream_for_many_subscribers_and_last_out_cancels():
    source = RecordingSource()
    hub = Hub(source)
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
    hub = Hub(RecordingSource())
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
    hub = Hub(RecordingSource())
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
    assert error["data"]["details"] == {"last_sent": {"last": 2}}


async def test_a_handle_that_ended_during_subscribe_never_rejoins():
    source = RecordingSource()
    hub = Hub(source)
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
