"""Security by default: the token, the Origin / Host checks and CORS, the bind refusal, and
the token kept out of logs, argv and state files. Real server, real sockets, real clients."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import psutil
import pytest
import websockets

from ibstream.client import AsyncClient, Client
from ibstream.errors import AuthRequired, ErrorCode, StreamError
from ibstream.protocol.auth import token_from_env
from ibstream.protocol.loopback import is_loopback_host
from ibstream.protocol.redact import RedactSecrets
from ibstream.server import config as server_config
from ibstream.server import guard
from ibstream.server.launch import ensure_server
from ibstream.server.run import start_server
from ibstream.server.settings import ServerSettings
from tests.client_fixtures import free_port
from tests.conftest import AAPL, WAIT, sse, sse_events
from tests.proxy import TcpProxy
from tests.schema_check import SENT

TOKEN = "s3cret-Token_42"
PAGE = "http://localhost:8888"
EVIL = "http://evil.example"


@pytest.fixture(autouse=True)
def _no_token_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IBSTREAM_TOKEN", raising=False)


async def ws_refusal(url: str, **kwargs: object) -> websockets.InvalidStatus:
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(url, open_timeout=WAIT, **kwargs)
    return info.value


async def ws_auth_refusal(url: str, **kwargs: object) -> tuple[dict, int | None]:
    """The error message and close code of a WebSocket refused for its token."""
    async with websockets.connect(url, open_timeout=WAIT, **kwargs) as conn:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            msgs = [orjson.loads(await conn.recv())]
            msgs.append(orjson.loads(await conn.recv()))  # nothing more: it closes
    assert len(msgs) == 1, msgs
    return msgs[0], closed.value.rcvd.code if closed.value.rcvd else None


async def greeting(url: str, **kwargs: object) -> dict:
    async with websockets.connect(url, open_timeout=WAIT, **kwargs) as conn:
        return orjson.loads(await conn.recv())


# --- Origin and CORS ------------------------------------------------------------------------
async def test_page_origin_is_refused_on_websocket_sse_and_http(server):
    refused = await ws_refusal(server.ws_url, origin=EVIL)
    assert refused.response.status_code == 403
    body = orjson.loads(refused.response.body)["error"]
    assert body["code"] == "PERMISSION_DENIED" and EVIL in body["message"]
    assert "--allow-origin" in body["message"]
    async with sse(server, f"/v2/stream/{AAPL}/last", headers={"Origin": EVIL}) as source:
        assert source.response.status_code == 403
        body = orjson.loads(await source.response.aread())["error"]
        assert body["code"] == "PERMISSION_DENIED" and EVIL in body["message"]
        assert "access-control-allow-origin" not in source.response.headers
    assert server.context.connections.limiter.total == 0  # no slot was taken


async def test_no_origin_and_own_origin_pass_without_cors_headers(server):
    assert (await greeting(server.ws_url))["type"] == "connected"
    own = f"http://127.0.0.1:{server.port}"
    assert (await greeting(server.ws_url, origin=own))["type"] == "connected"
    async with sse(server, f"/v2/stream/{AAPL}/last") as source:
        assert source.response.status_code == 200
        assert "access-control-allow-origin" not in source.response.headers
        event, _, _ = await anext(sse_events(source))
        assert event == "subscribed"


async def test_allowed_origin_gets_in_with_cors_headers(make_server):
    server = await make_server(allowed_origins=(PAGE,))
    assert (await greeting(server.ws_url, origin=PAGE))["type"] == "connected"
    async with sse(server, f"/v2/stream/{AAPL}/last", headers={"Origin": PAGE}) as source:
        assert source.response.status_code == 200
        assert source.response.headers["access-control-allow-origin"] == PAGE
        event, _, _ = await anext(sse_events(source))
        assert event == "subscribed"
    async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http:
        preflight = await http.options(
            "/ws/stats",
            headers={
                "Origin": PAGE,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == PAGE
        other = await http.get("/ws/stats", headers={"Origin": EVIL})
        assert other.status_code == 403 and "access-control-allow-origin" not in other.headers
    assert (await ws_refusal(server.ws_url, origin=EVIL)).response.status_code == 403


async def test_rebound_host_name_is_refused_without_a_token(make_server):
    """A page whose name resolves to 127.0.0.1 sends its own name as Host (and no Origin on
    a same-origin GET): without a token that request gets nothing."""
    server = await make_server()
    host = {"Host": f"evil.example:{server.port}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http:
        refused = await http.get("/ws/stats", headers=host)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "PERMISSION_DENIED"
        assert (
            await http.get("/ws/stats", headers={"Host": f"localhost:{server.port}"})
        ).is_success
    rebound = f"ws://evil.example:{server.port}/v2/ws/stream"  # resolved to 127.0.0.1
    sock = socket.create_connection(("127.0.0.1", server.port))
    assert (await ws_refusal(rebound, sock=sock)).response.status_code == 403
    guarded = await make_server(token=TOKEN)  # with a token the name does not matter
    async with httpx.AsyncClient(base_url=guarded.url, timeout=WAIT) as http:
        answer = await http.get("/ws/stats", headers={**host, "Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 200


# --- the token -------------------------------------------------------------------------------
async def test_websocket_needs_the_token_in_header_or_query(make_server):
    server = await make_server(token=TOKEN)
    for kwargs in ({}, {"additional_headers": {"Authorization": "Bearer wrong"}}):
        msg, code = await ws_auth_refusal(server.ws_url, **kwargs)
        assert msg["type"] == "error" and msg["data"]["code"] == "AUTH_REQUIRED", msg
        assert msg["data"]["recoverable"] is False and "?token=" in msg["data"]["message"]
        assert code == 4001
    _, code = await ws_auth_refusal(server.ws_url + "?token=wrong")
    assert code == 4001
    control = server.ws_url.replace("/v2/ws/stream", "/ws/control")
    assert (await ws_auth_refusal(control))[1] == 4001
    header = {"Authorization": f"Bearer {TOKEN}"}
    assert (await greeting(server.ws_url, additional_headers=header))["type"] == "connected"
    assert (await greeting(f"{server.ws_url}?token={TOKEN}"))["type"] == "connected"
    async with websockets.connect(control + f"?token={TOKEN}", open_timeout=WAIT) as conn:
        await conn.send(orjson.dumps({"type": "ping", "id": "p"}).decode())
        assert orjson.loads(await conn.recv())["type"] == "pong"


async def test_sse_and_http_need_the_token_in_header_or_query(make_server):
    server = await make_server(token=TOKEN)
    path = f"/v2/stream/{AAPL}/last"
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {TOKEN}"}):
        async with sse(server, path, headers=headers) as source:
            assert source.response.status_code == 401
            assert source.response.headers["www-authenticate"] == "Bearer"
            body = orjson.loads(await source.response.aread())["error"]
            assert body["code"] == "AUTH_REQUIRED" and body["recoverable"] is False
    async with sse(server, f"{path}?token=wrong") as source:
        assert source.response.status_code == 401
    async with sse(server, path, headers={"Authorization": f"Bearer {TOKEN}"}) as source:
        assert source.response.status_code == 200
        assert [e for e, _, _ in [await anext(sse_events(source))]] == ["subscribed"]
    async with sse(server, f"{path}?limit=2&token={TOKEN}") as source:  # browsers' EventSource
        assert source.response.status_code == 200
        events = [event async for event, _, _ in sse_events(source)]
        assert events[0] == "subscribed" and events.count("tick") == 2
    async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http:
        assert (await http.get("/ws/stats")).status_code == 401
        assert (await http.get("/v2/contracts?symbol=AAPL")).status_code == 401
        assert (await http.get("/nowhere")).status_code == 401  # nothing is told without it
        assert (await http.get(f"/ws/stats?token={TOKEN}")).status_code == 200
        health = await http.get("/health")  # open, so ensure_server and `status` can probe
        assert health.status_code == 200 and TOKEN not in health.text


async def test_tokens_are_compared_in_constant_time(make_server, monkeypatch):
    server = await make_server(token=TOKEN)
    compared: list[tuple[bytes, bytes]] = []

    def compare_digest(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return guard_hmac_compare(a, b)

    guard_hmac_compare = guard.hmac.compare_digest
    monkeypatch.setattr(guard.hmac, "compare_digest", compare_digest)
    same_length, other_length = "x" * len(TOKEN), "short"
    for wrong in (same_length, other_length):
        async with sse(server, f"/v2/stream/{AAPL}/last?token={wrong}") as source:
            assert source.response.status_code == 401
    assert compared == [(same_length.encode(), TOKEN.encode()), (b"short", TOKEN.encode())]


# --- binding ---------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "localhost", "[::1]"])
def test_loopback_hosts(host):
    assert is_loopback_host(host)
    assert guard.bind_problem(host, None) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.com"])
def test_other_hosts_need_a_token(host):
    assert not is_loopback_host(host)
    problem = guard.bind_problem(host, None)
    assert problem and host in problem and "--token" in problem and "IBSTREAM_TOKEN" in problem
    assert guard.bind_problem(host, TOKEN) is None


async def test_off_loopback_refuses_to_start_without_a_token(gateway):
    settings = ServerSettings(host="0.0.0.0", port=0, ib_port=gateway.port, sent_observer=SENT)
    with pytest.raises(AuthRequired, match="pass --token or set IBSTREAM_TOKEN"):
        await start_server(settings)
    settings.token = TOKEN
    async with await start_server(settings) as handle:
        async with httpx.AsyncClient(base_url=handle.url, timeout=WAIT) as http:
            assert (await http.get("/ws/stats")).status_code == 401
            auth = {"Authorization": f"Bearer {TOKEN}"}
            assert (await http.get("/ws/stats", headers=auth)).status_code == 200


# --- logs ------------------------------------------------------------------------------------
async def test_the_token_never_reaches_the_logs(make_server, caplog):
    caplog.set_level(logging.DEBUG)
    server = await make_server(token=TOKEN, log_level="debug")
    assert (await greeting(f"{server.ws_url}?token={TOKEN}&x=1"))["type"] == "connected"
    await ws_auth_refusal(f"{server.ws_url}?token={TOKEN}x")
    async with sse(server, f"/v2/stream/{AAPL}/last?limit=1&token={TOKEN}") as source:
        assert [e async for e, _, _ in sse_events(source)][0] == "subscribed"
    async with sse(server, f"/v2/stream/{AAPL}/last?token={TOKEN}&limit=x") as source:
        assert source.response.status_code == 400  # an error that quotes the query it got
        assert TOKEN not in (await source.response.aread()).decode()
    # What the test's own clients log (httpx prints each URL it requests) is theirs.
    server_side = [r for r in caplog.records if not r.name.startswith(CLIENT_LOGGERS)]
    text = "\n".join(f"{r.name} {r.getMessage()}" for r in server_side)
    assert "/v2/ws/stream?x=1" in text  # uvicorn logged the WebSocket's path and query
    assert TOKEN not in text and len(server_side) > 20


CLIENT_LOGGERS = ("httpx", "httpcore", "websockets.client")


# --- the client ------------------------------------------------------------------------------
@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_client_with_token_collects_and_without_fails_at_once(make_server, transport):
    server = await make_server(token=TOKEN)
    async with AsyncClient(server.url, transport, token=TOKEN) as client:
        ticks = await client.collect(AAPL, "last", limit=3, progress=False)
        assert len(ticks) == 3
    client = AsyncClient(server.url, transport, connect_timeout=WAIT)
    try:
        with pytest.raises(AuthRequired) as info:
            await client.collect(AAPL, "last", limit=3, progress=False)
        assert info.value.recoverable is False and client.reconnects == 0
    finally:
        await client.close()


async def test_client_token_defaults_to_the_environment(make_server, monkeypatch):
    server = await make_server(token=TOKEN)
    monkeypatch.setenv("IBSTREAM_TOKEN", TOKEN)
    async with AsyncClient(server.url) as client:
        assert len(await client.collect(AAPL, "last", limit=2, progress=False)) == 2


async def test_client_stops_reconnecting_when_the_token_is_refused(make_server):
    """The link comes back on a server with another token: the subscription fails at once
    with AuthRequired and the client closes, instead of retrying forever."""
    first, second = await make_server(token=TOKEN), await make_server(token="another")
    async with TcpProxy(first.port) as proxy, AsyncClient(proxy_url(proxy), token=TOKEN) as client:
        async with client.stream(AAPL, "last") as stream:
            await anext(aiter(stream))
            proxy.target = ("127.0.0.1", second.port)
            proxy.cut()
            with pytest.raises(AuthRequired):
                async for _ in stream:
                    pass
        await client.wait_for(lambda: client.state == "closed", WAIT)


def proxy_url(proxy: TcpProxy) -> str:
    return f"http://127.0.0.1:{proxy.port}"


# --- options and the background server ------------------------------------------------------
def test_token_and_origins_from_config_and_env_stay_off_the_command_line(tmp_path):
    path = tmp_path / "ibstream.toml"
    path.write_text(f'token = "{TOKEN}"\nallow_origin = ["{PAGE}", "https://lab.example"]\n')
    options = server_config.resolve({}, {}, path)
    assert options.token == TOKEN and options.origins == (PAGE, "https://lab.example")
    argv = options.serve_argv()
    assert TOKEN not in " ".join(argv) and TOKEN not in repr(options)
    assert argv[argv.index("--allow-origin") + 1] == PAGE
    assert options.serve_env({"IBSTREAM_TOKEN": "old", "A": "1"}) == {
        "A": "1",
        "IBSTREAM_TOKEN": TOKEN,
    }
    from_env = server_config.resolve({}, {"IBSTREAM_TOKEN": "env-token"}, path)
    assert from_env.token == "env-token"  # environment over config file
    path.write_text("token = 12345678\n")
    with pytest.raises(server_config.ConfigError) as info:
        server_config.read_config(path)
    assert "12345678" not in str(info.value)


def test_background_server_with_a_token(tmp_path, monkeypatch):
    """ensure_server(token=...) starts a server that enforces it; the token is in no argv,
    state file or log; `run_server.py status` works; clients with it collect, without fail."""
    for name in [n for n in os.environ if n.startswith("IBSTREAM_") and n != "IBSTREAM_STATE_DIR"]:
        monkeypatch.delenv(name)
    port = free_port()
    log_file = tmp_path / "server.log"
    info = ensure_server(f"http://127.0.0.1:{port}", demo=True, token=TOKEN, log_file=log_file)
    try:
        assert info.started
        assert all(TOKEN not in arg for arg in psutil.Process(info.pid).cmdline())
        with Client(info.url, token=TOKEN) as client:
            assert len(client.collect("ES", "last", limit=2, progress=False)) == 2
        with pytest.raises(AuthRequired), Client(info.url, backoff=None) as client:
            client.collect("ES", "last", limit=2, progress=False)
        script = Path(__file__).resolve().parents[1] / "server" / "run_server.py"
        status = subprocess.run(
            [sys.executable, str(script), "status", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stdout + status.stderr
        assert TOKEN not in status.stdout
    finally:
        info.stop()
    state = Path(os.environ["IBSTREAM_STATE_DIR"])
    written = [p.read_text(errors="replace") for p in state.iterdir() if p.is_file()]
    written.append(log_file.read_text())
    assert "serving on" in written[-1] or "ibstream server on" in written[-1]
    assert all(TOKEN not in text for text in written)


def test_background_start_off_loopback_without_token_says_what_to_do():
    from ibstream.server.background import ServerStartError, start

    options = server_config.ServeOptions(host="0.0.0.0", port=free_port(), demo=True)
    with pytest.raises(ServerStartError, match="pass --token or set IBSTREAM_TOKEN"):
        start(options, timeout=5)


def test_error_codes_of_refusals():
    assert StreamError(ErrorCode.AUTH_REQUIRED, "x").http_status == 401
    assert StreamError(ErrorCode.PERMISSION_DENIED, "x").http_status == 403


def test_log_filter_masks_query_tokens_and_authorization_headers():
    record = logging.LogRecord(
        "uvicorn.error",
        logging.DEBUG,
        __file__,
        1,
        "< %s %s",
        ("GET", f"/x?a=1&token={TOKEN}"),
        None,
    )
    assert RedactSecrets().filter(record) and record.getMessage() == "< GET /x?a=1&token=***"
    header = logging.LogRecord(
        "uvicorn.error", logging.DEBUG, __file__, 1, "< %s: %s", ("Authorization", "Bearer x"), None
    )
    RedactSecrets().filter(header)
    assert header.getMessage() == "< Authorization: ***"


async def test_malformed_host_is_refused_not_a_crash(server):
    async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http:
        answer = await http.get("/ws/stats", headers={"Host": "[bad"})
    assert answer.status_code in (400, 403)


def test_token_from_env():
    assert token_from_env({"IBSTREAM_TOKEN": f"  {TOKEN}\n"}) == TOKEN
    assert token_from_env({"IBSTREAM_TOKEN": "  "}) is None
    assert token_from_env({}) is None


async def test_cross_site_subresource_get_cannot_open_an_sse_stream(server):
    """<img>/<iframe>/no-cors fetch carry no Origin but Sec-Fetch-Site: cross-site: refused."""
    img = {  # what a browser sends for <img src="http://127.0.0.1:8001/v2/stream/...">
        "Sec-Fetch-Site": "cross-site",
        "Sec-Fetch-Mode": "no-cors",
        "Sec-Fetch-Dest": "image",
        "Referer": "http://evil.example/",
    }
    async with sse(server, f"/v2/stream/{AAPL}?tick_types=last,bid_ask", headers=img) as source:
        status = source.response.status_code
        opened = server.context.connections.limiter.total
    assert (status, opened) == (403, 0), "a cross-site page opened a stream"


async def test_client_debug_logs_do_not_show_the_token(make_server, caplog):
    """websockets logs every handshake header on `websockets.client` at DEBUG: masked."""
    server = await make_server(token=TOKEN)
    caplog.set_level(logging.DEBUG)
    async with AsyncClient(server.url, "websocket", token=TOKEN) as client:
        ticks = await client.collect(AAPL, "last", limit=1, progress=False)
        assert len(ticks) == 1
    text = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)
    assert "Authorization" in text or "authorization" in text  # headers were logged
    assert TOKEN not in text, [
        f"{r.name}: {r.getMessage()}" for r in caplog.records if TOKEN in r.getMessage()
    ]


@pytest.mark.parametrize("transport", ["sse", "websocket"])
async def test_client_never_sends_a_loopback_servers_token_to_a_proxy(
    make_server, monkeypatch, transport
):
    """HTTP_PROXY is for remote servers: a local server's requests (and token) go direct."""
    server = await make_server(token=TOKEN)
    seen = bytearray()

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.extend(await reader.read(65536))
        writer.close()

    trap = await asyncio.start_server(proxy, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{trap.sockets[0].getsockname()[1]}"
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    try:
        client = AsyncClient(server.url, transport, token=TOKEN, connect_timeout=2, backoff=None)
        try:
            ticks = await client.collect(AAPL, "last", limit=1, progress=False)
        except StreamError as exc:
            ticks = exc
        finally:
            await client.close()
    finally:
        trap.close()
    assert TOKEN.encode() not in seen, bytes(seen[:400])
    assert not isinstance(ticks, StreamError), ticks
