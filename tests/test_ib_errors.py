"""IB's own error numbers reach the server's clients, over WebSocket and SSE, whatever the
mapping: the simulator's account limits (10190, 354) and lookup refusals (354, 162, 321, 200).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ibstream.gateway import GatewaySimulator
from tests.conftest import get_json, sse, sse_events

AAPL, ES, CLF7 = 265598, 637533641, 215465490
LOOKUP_REFUSALS = [
    (354, "PERMISSION_DENIED"),
    (162, "RATE_LIMIT_EXCEEDED"),
    (321, "INVALID_MESSAGE"),
]


@pytest.fixture
async def gateway() -> AsyncIterator[GatewaySimulator]:
    """Overrides conftest's: an account with two tick-by-tick slots and no CL data."""
    async with GatewaySimulator(
        port=0, seed=1, rate=200.0, bursts=False, tick_by_tick_slots=2, no_permission={"CL"}
    ) as gw:
        yield gw


@pytest.mark.parametrize("ib_code, code", LOOKUP_REFUSALS)
async def test_lookup_refusal_keeps_ibs_code_over_websocket(
    server, gateway, ws_client, ib_code, code
):
    client = await ws_client(server)
    gateway.fail_next("contract_details", ib_code)
    reply = await client.request("subscribe", {"contract_id": "AAPL", "tick_types": ["last"]})
    assert reply["type"] == "error" and reply["data"]["code"] == code
    assert reply["data"]["details"]["ib_code"] == ib_code
    assert f"IB error {ib_code}" in reply["data"]["message"]
    missing = await client.request("subscribe", {"contract_id": "NOSUCH", "tick_types": ["last"]})
    assert missing["data"]["code"] == "CONTRACT_NOT_FOUND"
    assert missing["data"]["details"]["ib_code"] == 200


@pytest.mark.parametrize("ib_code, code", LOOKUP_REFUSALS)
async def test_lookup_refusal_keeps_ibs_code_over_sse(server, gateway, ib_code, code):
    gateway.fail_next("contract_details", ib_code)
    status, body = await get_json(server, "/v2/stream/AAPL/last")
    assert status >= 400 and body["error"]["code"] == code
    assert body["error"]["details"]["ib_code"] == ib_code


async def test_no_permission_354_from_the_gateway_reaches_both_transports(server, ws_client):
    client = await ws_client(server)
    subscribed = await client.subscribe("CL", ["last"])
    assert subscribed["contract"]["contract_id"] == CLF7  # the lookup itself is allowed
    error = await client.expect("error", code="PERMISSION_DENIED")
    assert error["data"]["details"]["ib_code"] == 354
    assert (await client.expect("complete", reason="error"))["stream_id"] == error["stream_id"]
    async with sse(server, f"/v2/stream/{CLF7}/bid_ask") as source:
        events = [e async for e in sse_events(source)]
    errors = [data for event, data, _ in events if event == "error"]
    assert errors and errors[0]["data"]["details"]["ib_code"] == 354


async def test_tick_by_tick_slots_10190_from_the_gateway(server, gateway, ws_client):
    client = await ws_client(server)
    await client.subscribe(AAPL, ["last", "bid_ask"])  # both slots
    await gateway.wait_for(lambda: len(gateway.subscriptions) == 2)
    doomed = (await client.subscribe(ES, ["last"]))["streams"][0]["stream_id"]
    error = await client.expect("error", code="RATE_LIMIT_EXCEEDED")
    assert error["stream_id"] == doomed and error["data"]["details"]["ib_code"] == 10190
    assert "slot" in error["data"]["message"]
    assert len(gateway.subscriptions) == 2  # the refused one never took a slot


async def test_out_of_slots_the_hub_gives_up_an_idle_channel_and_retries(
    server, gateway, ws_client
):
    client = await ws_client(server)
    streams = (await client.subscribe(AAPL, ["last", "bid_ask"]))["streams"]
    await gateway.wait_for(lambda: len(gateway.subscriptions) == 2)
    for stream in streams:  # idle now, but kept upstream for the grace period: slots held
        reply = await client.request("unsubscribe", {"stream_id": stream["stream_id"]})
        assert reply["type"] == "unsubscribed"
    assert len(gateway.subscriptions) == 2
    wanted = (await client.subscribe(ES, ["last"]))["streams"][0]["stream_id"]
    ticks = await client.ticks(3, wanted)  # 10190 was met by freeing an idle slot, no error
    assert [t["stream_id"] for t in ticks] == [wanted] * 3
    assert not [m for m in client.seen if m["type"] == "error"]
    held = {(s[2], s[3]) for s in gateway.subscriptions}
    assert (ES, "Last") in held and len(held) == 2
