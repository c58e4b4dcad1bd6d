"""HTTP answers as the README promises: JSON error bodies for every HTTP error, /health 503
while IB is away (and no stale `last_error` once it is back), tick_types must be a list."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import AAPL, WAIT, get_json, sse


async def request(server, method: str, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as client:
        return await client.request(method, path)


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details", "recoverable"}, error
    return error


@pytest.mark.parametrize("path", ["/nope", "/v2/streams/AAPL", "/health/x"])
async def test_unknown_path_is_a_json_404(server, path):
    response = await request(server, "GET", path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    error = error_of(response)
    assert error["code"] == "INVALID_MESSAGE" and path in error["message"]
    assert "/health" in error["details"]["endpoints"]


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/health"), ("DELETE", "/ws/stats"), ("PUT", "/v2/schema")]
)
async def test_wrong_method_is_a_json_405(server, method, path):
    response = await request(server, method, path)
    assert response.status_code == 405
    error = error_of(response)
    assert method in error["message"] and "GET" in error["details"]["allowed"]
    assert "GET" in response.headers["allow"]


async def test_contracts_errors_are_json(server):
    status, body = await get_json(server, "/v2/contracts")
    assert status == 400 and body["error"]["details"]["field"] == "symbol"
    status, body = await get_json(server, "/v2/contracts?symbol=NOSUCH")
    assert status == 404 and body["error"]["code"] == "CONTRACT_NOT_FOUND"


def no_nulls(value: object) -> bool:
    if isinstance(value, dict):
        return all(v is not None and no_nulls(v) for v in value.values())
    if isinstance(value, list):
        return all(no_nulls(v) for v in value)
    return True


async def test_health_503_while_ib_is_away_and_no_stale_error_after(server, gateway, ws_client):
    status, health = await get_json(server, "/health")
    assert status == 200 and health["status"] == "ok" and "last_error" not in health["ib"]
    client = await ws_client(server)
    await client.subscribe(AAPL, ["last"])  # so the outage and the return are announced
    await gateway.stop()
    await client.expect("info", status="ib_disconnected")
    status, health = await get_json(server, "/health")
    assert status == 503 and health["status"] == "degraded"
    assert health["ib"]["connected"] is False and health["ib"]["last_error"]
    assert no_nulls(health), health  # server_version is absent while not connected
    await gateway.start()  # same port: the server's source reconnects
    await client.expect("info", timeout=30, status="resumed")
    status, health = await get_json(server, "/health")
    assert status == 200 and health["status"] == "ok" and health["ib"]["reconnects"] == 1
    assert "last_error" not in health["ib"], health  # the outage is over
    status, stats = await get_json(server, "/ws/stats")
    assert status == 200 and no_nulls(stats), stats


@pytest.mark.parametrize("bad", ["last", 5, "bid_ask,last"])
async def test_tick_types_not_a_list_over_websocket(server, ws_client, bad):
    client = await ws_client(server)
    reply = await client.request("subscribe", {"contract_id": AAPL, "tick_types": bad})
    assert reply["type"] == "error", reply
    data = reply["data"]
    assert data["code"] == "INVALID_MESSAGE" and data["details"]["field"] == "data.tick_types"
    assert data["details"]["got"] == bad and "a list" in data["details"]["expected"]
    await client.request("ping")  # the connection stays open


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v2/stream/AAPL?tick_types=", "tick_types"),
        ("/v2/stream/AAPL?tick_types=last&tick_types=bid_ask", "tick_types"),
        ("/v2/stream/AAPL?tick_types=last&limit=abc", "limit"),
        ("/v2/stream/AAPL/last?batch_ms=5000", "batch_ms"),
    ],
)
async def test_bad_sse_parameters_name_the_field(server, path, field):
    async with sse(server, path) as source:
        assert source.response.status_code == 400
        await source.response.aread()
        error = error_of(source.response)
    assert error["details"]["field"].startswith(field), error
    assert error["code"] in ("INVALID_MESSAGE", "INVALID_TICK_TYPE")


@pytest.mark.parametrize(
    "path", ["/health", "/v2/schema", "/ws/stats", "/v2/contracts?symbol=AAPL"]
)
async def test_head_answers_as_get_does(server, path):
    """Probes (`curl -I`, load balancers) send HEAD: the same status and headers as GET, and
    no body, on every GET endpoint (FastAPI routes answer only the methods they list)."""
    get, head = await request(server, "GET", path), await request(server, "HEAD", path)
    assert head.status_code == get.status_code == 200, (path, head.status_code)
    assert head.headers["content-type"] == get.headers["content-type"] and head.content == b""


async def test_head_on_an_sse_url_checks_it_as_get_does_but_opens_nothing(server):
    bad = await request(server, "HEAD", "/v2/stream/AAPL?limit=1")  # tick_types missing
    assert bad.status_code == (await request(server, "GET", "/v2/stream/AAPL?limit=1")).status_code
    assert bad.status_code == 400
    good = await request(server, "HEAD", "/v2/stream/AAPL/last?limit=1")
    assert good.status_code == 200 and good.headers["content-type"].startswith("text/event")
    assert not server.hub.channels  # nothing was subscribed for a HEAD


async def test_a_missing_field_is_absent_from_the_error_not_null(server, ws_client):
    """Nulls are omitted everywhere: a field that did not arrive has no `got`."""
    client = await ws_client(server)
    reply = await client.request("subscribe", {"tick_types": ["last"]})
    details = reply["data"]["details"]
    assert details["field"] == "data.contract_id" and "got" not in details, reply
    assert no_nulls(reply), reply
    status, body = await get_json(server, "/v2/stream/AAPL?limit=1")
    assert status == 400 and body["error"]["details"]["field"] == "tick_types"
    assert "got" not in body["error"]["details"] and no_nulls(body), body


async def test_an_infinite_number_is_named_and_the_reply_keeps_its_id(server, ws_client):
    """1e400 parses as infinity, which JSON cannot carry: the error shows it as text and
    still answers the request's id."""
    client = await ws_client(server)
    await client.send(
        '{"type":"subscribe","id":"big","data":{"contract_id":"AAPL","tick_types":["last"],'
        '"config":{"timeout_seconds":1e400}}}'
    )
    reply = await client.expect("error", request_id="big")
    assert reply["id"] == "big" and reply["data"]["details"]["got"] == "inf", reply
    assert "got inf" in reply["data"]["message"]


async def test_a_failure_is_a_json_500_with_cors_and_logged_once(make_server, caplog):
    """An endpoint that fails: the JSON 500, readable by an allowed page (CORS headers), and
    one traceback in the log, not a second one from uvicorn."""
    page = "http://page.example:8000"
    server = await make_server(allowed_origins=(page,))

    async def broken(_symbol: str) -> list:
        raise RuntimeError("boom")

    server.hub.source.search = broken  # a fault injected into the real server
    async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as client:
        response = await client.get("/v2/contracts?symbol=AAPL", headers={"Origin": page})
    assert response.status_code == 500 and response.headers["access-control-allow-origin"] == page
    error = error_of(response)
    assert error["code"] == "INTERNAL_ERROR" and "RuntimeError" in error["message"]
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "/v2/contracts" in tracebacks[0].getMessage(), tracebacks
