"""The client's bookkeeping without a server: dedup and resume positions, gap handling, typed
errors from wire bodies, backoff, URLs, and a light import."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import pytest

from ibstream.client import Backoff
from ibstream.client.events import ErrorEvent, EventLog, Gap, Info
from ibstream.client.options import base_url, ws_url
from ibstream.client.subscription import Subscription
from ibstream.errors import (
    ContractNotFound,
    ErrorCode,
    RateLimitExceeded,
    SlowConsumer,
    StreamError,
    error_from_body,
)
from tests.proxy import TcpProxy


class ListSink:
    def __init__(self) -> None:
        self.ticks: list[dict] = []
        self.ended: list = []

    def put(self, tick: dict) -> None:
        self.ticks.append(tick)

    def end(self, error: StreamError | None = None) -> None:
        self.ended.append(error)


def make() -> tuple[Subscription, ListSink, list]:
    events: list = []
    sink = ListSink()
    sub = Subscription("ES", ["BidAsk", "last"], sink, EventLog("test", [events.append]))
    sub.bind(
        {
            "contract": {"contract_id": 7, "symbol": "ES"},
            "streams": [
                {"stream_id": "s-ba", "tick_type": "bid_ask"},
                {"stream_id": "s-l", "tick_type": "last"},
            ],
        }
    )
    return sub, sink, events


def tick(tick_type: str, seq: int) -> dict:
    sid = "s-ba" if tick_type == "bid_ask" else "s-l"
    return {"type": "tick", "stream_id": sid, "data": {"tick_type": tick_type, "sequence": seq}}


def info(stream_id: str, status: str, **details: object) -> dict:
    data = {"status": status, "message": status, "details": details}
    return {"type": "info", "stream_id": stream_id, "data": data}


def test_repeats_are_dropped_and_positions_kept_per_tick_type():
    sub, sink, events = make()
    assert sub.tick_types == ["bid_ask", "last"] and sub.target == 7
    for msg in [tick("bid_ask", 5), tick("last", 2), tick("bid_ask", 6), tick("bid_ask", 5)]:
        sub.on_message(msg)
    sub.on_message(tick("last", 2))
    assert [(t["tick_type"], t["sequence"]) for t in sink.ticks] == [
        ("bid_ask", 5),
        ("last", 2),
        ("bid_ask", 6),
    ]
    assert sub.duplicates == 2 and sub.resume_from() == {"bid_ask": 6, "last": 2}
    assert events == []


def test_unknown_sequence_gap_resets_that_stream_only():
    sub, sink, events = make()
    sub.on_message(tick("bid_ask", 500))
    sub.on_message(tick("last", 90))
    sub.on_message(info("s-ba", "gap", reason="unknown_sequence", resume_from=500))
    sub.on_message(tick("bid_ask", 1))  # the restarted server's numbering
    sub.on_message(tick("last", 3))  # still deduplicated against 90
    assert [t["sequence"] for t in sink.ticks] == [500, 90, 1]
    assert sub.positions == {"bid_ask": 1, "last": 90}
    assert [(e.tick_type, e.reason) for e in events] == [("bid_ask", "unknown_sequence")]
    assert isinstance(events[0], Gap) and events[0].contract_id == 7


def test_jumps_are_reported_once():
    sub, sink, events = make()
    sub.on_message(tick("last", 1))
    sub.on_message(info("s-l", "gap", reason="not_buffered", first_missing=2, last_missing=4))
    sub.on_message(tick("last", 5))  # told by the server: no second report
    sub.on_message(tick("last", 9))  # not told: the client says so itself
    assert [(e.reason, e.details) for e in events] == [
        ("not_buffered", {"reason": "not_buffered", "first_missing": 2, "last_missing": 4}),
        ("missed", {"first_missing": 6, "last_missing": 8}),
    ]
    assert len(sink.ticks) == 3


def test_infos_pass_through_and_shutdown_is_not_an_end():
    sub, sink, events = make()
    sub.on_message(info("s-l", "ib_disconnected"))
    complete = {"type": "complete", "stream_id": "s-l", "data": {"reason": "server_shutdown"}}
    sub.on_message(complete)
    assert sub.active and sink.ended == []
    assert isinstance(events[0], Info) and events[0].status == "ib_disconnected"
    assert events[0].tick_type == "last"


def test_stream_error_then_complete_fails_with_the_typed_error():
    sub, sink, events = make()
    body = {"code": "RATE_LIMIT_EXCEEDED", "message": "no slot", "details": {"ib_code": 10190}}
    sub.on_message({"type": "error", "stream_id": "s-ba", "data": body})
    sub.on_message({"type": "complete", "stream_id": "s-ba", "data": {"reason": "error"}})
    assert not sub.active and isinstance(sub.error, RateLimitExceeded)
    assert sink.ended == [sub.error] and sub.error.details["ib_code"] == 10190
    assert isinstance(events[0], ErrorEvent) and events[0].tick_type == "bid_ask"
    sub.on_message(tick("last", 1))
    assert sink.ticks == []  # nothing after the end


def test_typed_errors_from_bodies_and_constructors():
    error = error_from_body({"code": "CONTRACT_NOT_FOUND", "message": "no", "recoverable": False})
    assert isinstance(error, ContractNotFound) and error.code is ErrorCode.CONTRACT_NOT_FOUND
    assert type(StreamError(ErrorCode.SLOW_CONSUMER, "x")) is SlowConsumer
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is ContractNotFound and copy.message == "no" and not copy.recoverable
    unknown = error_from_body({"code": "SOMETHING_NEW", "message": "m"})
    assert unknown.code is ErrorCode.INTERNAL_ERROR and unknown.details["server_code"]


def test_backoff_grows_to_its_cap_with_jitter():
    delays = list(Backoff(initial=0.1, maximum=1.0, factor=2, jitter=0.5, max_attempts=8).delays())
    assert len(delays) == 8 and all(0.05 <= d <= 1.0 for d in delays)
    assert all(0.5 <= d for d in delays[4:])  # capped at 1.0, jitter takes at most half
    with pytest.raises(ValueError):
        Backoff(initial=2, maximum=1)


def test_server_urls():
    assert base_url("127.0.0.1:8001") == "http://127.0.0.1:8001"
    assert base_url("ws://h:1/v2/ws/stream") == "http://h:1"
    assert ws_url(base_url("https://h")) == "wss://h/v2/ws/stream"
    with pytest.raises(ValueError):
        base_url("ftp://h")


def test_importing_the_client_does_not_import_pandas():
    code = textwrap.dedent(
        """
        import importlib.util, sys, types
        spec = importlib.util.find_spec("ibstream")
        package = types.ModuleType("ibstream")  # the package without its __init__
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["ibstream"] = package
        import ibstream.client
        from ibstream.client import AsyncClient, Client
        Client("http://127.0.0.1:1")
        print(sorted(m for m in ("pandas", "numpy", "websockets", "httpx") if m in sys.modules))
        """
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


async def test_token_goes_as_a_header_never_in_the_url(server):
    from ibstream.client import AsyncClient

    async with TcpProxy(server.port) as proxy:
        async with AsyncClient(proxy.url, token="s3cret") as client:
            await client.ping()
        async with AsyncClient(proxy.url, "sse", token="s3cret") as client:
            await client.ping()
    ws_request, health = proxy.sniffed[0], proxy.sniffed[1]
    assert b"GET /v2/ws/stream " in ws_request  # URLs end up in logs; headers do not
    assert b"s3cret" not in b"".join(r.split(b"\r\n")[0] for r in proxy.sniffed)
    assert b"authorization: bearer s3cret" in ws_request.lower()
    assert b"authorization: bearer s3cret" in health.lower()
