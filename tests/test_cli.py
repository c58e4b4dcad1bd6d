"""The console script as a user runs it: `ibstream demo`, `serve`, `gateway`, `--version`,
`--help`, and the one-line answers to what a user can fix (busy port, unreachable IB, a bind
off loopback without a token). (`server/run_server.py` is tested in test_run_server.py.)"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from importlib import metadata

import httpx
import pytest

from ibstream.cli import build_parser, bus_options, serve_settings
from ibstream.errors import StreamError
from ibstream.ib.source import IBSource
from ibstream.server.run import ServerHandle
from tests.client_fixtures import free_port
from tests.conftest import WAIT

IBSTREAM = [sys.executable, "-m", "ibstream"]
SECRET = "s3cret-token-0123456789"
DEMO_LINE_TYPES = {"start", "stream", "trade", "info", "gap", "error", "summary"}
SUMMARY_KEYS = {"total_trades", "buy_volume", "sell_volume", "net_delta", "buy_pct"}


async def run_cli(*args: str, env: dict | None = None, timeout: float = 60) -> tuple[int, str, str]:
    """Run `ibstream ARGS` to its end without blocking this loop (a server in it may be probed)."""
    proc = await asyncio.create_subprocess_exec(
        *IBSTREAM, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


def assert_one_line(err: str, command: str, *words: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ibstream {command}: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (choices,) = [a.choices for a in parser._actions if isinstance(a.choices, dict)]
    return {"ibstream": parser, **choices}


# --- version and help ----------------------------------------------------------------------


def test_version_is_the_installed_package_version():
    run = subprocess.run(IBSTREAM + ["--version"], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0
    assert run.stdout.strip() == f"ibstream {metadata.version('ibstream')}"


@pytest.mark.parametrize(
    "name", ["ibstream", "gateway", "serve", "demo", "delta", "record", "history"]
)
def test_help_shows_the_default_of_every_option_that_takes_a_value(name):
    parser = subcommands()[name]
    valued = [a for a in parser._actions if a.option_strings and a.nargs != 0]
    text = " ".join(parser.format_help().split())  # unwrapped
    assert text.count("(default: ") + text.count("(required)") == len(valued), text
    for action in valued:
        if action.default not in (None, [], argparse.SUPPRESS):
            assert f"(default: {action.default})" in text, action.dest
    assert "(default: None)" not in text and "(default: False)" not in text


def test_serve_help_lists_the_security_options_with_their_defaults():
    text = " ".join(subcommands()["serve"].format_help().split())
    assert "--token TOKEN" in text and "(default: $IBSTREAM_TOKEN" in text
    assert "--allow-origin ORIGIN" in text and "(default: none" in text
    assert "(default: 8001)" in text and "(default: 127.0.0.1)" in text


def test_the_token_comes_from_the_environment_and_never_shows_in_help(monkeypatch):
    monkeypatch.setenv("IBSTREAM_TOKEN", SECRET)
    for parser in subcommands().values():
        assert SECRET not in parser.format_help()
    parser = build_parser()
    assert serve_settings(parser.parse_args(["serve"])).token == SECRET
    assert serve_settings(parser.parse_args(["serve", "--token", "given"])).token == "given"
    monkeypatch.delenv("IBSTREAM_TOKEN")
    assert serve_settings(parser.parse_args(["serve"])).token is None


def test_allow_origin_is_repeatable():
    args = build_parser().parse_args(
        ["serve", "--allow-origin", "http://a.example", "--allow-origin", "http://b.example:8888"]
    )
    assert serve_settings(args).allowed_origins == ("http://a.example", "http://b.example:8888")
    assert serve_settings(build_parser().parse_args(["serve"])).allowed_origins == ()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["serve", "--port", "eighty"], ["--port", "'eighty'"]),
        (["serve", "--port", "70000"], ["--port", "0 to 65535", "70000"]),
        (["serve", "--port", "-1"], ["--port", "0 to 65535"]),
        (["serve", "--ib-port", "70000"], ["--ib-port", "1 to 65535"]),
        (["serve", "--max-connections-per-ip", "-1"], ["--max-connections-per-ip", "above 0"]),
        (["gateway", "--port", "70000"], ["--port", "0 to 65535"]),
        (["gateway", "--rate", "-1"], ["--rate", "above 0"]),
    ],
)
def test_a_bad_option_value_is_one_line(args, words):
    """Not a traceback (an out-of-range port overflowed in the socket call), not a server
    that runs on with a dead IB connection, not the whole usage block: one line, exit 2."""
    run = subprocess.run(IBSTREAM + args, capture_output=True, text=True, timeout=30)
    assert run.returncode == 2
    assert_one_line(run.stderr, args[0], "argument", *words, "--help")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--bus-max-age", "60"], ["--bus-max-age only applies with --bus URL"]),
        (["--bus-replicas", "3", "--bus-buffer", "9"], ["--bus-replicas, --bus-buffer", "--bus"]),
        (["--bus-lease", "5"], ["--bus-lease only applies with --from-bus URL"]),
        (["--from-bus", "nats://127.0.0.1:1", "--bus-buffer", "9"], ["--bus-buffer", "--bus URL"]),
    ],
)
def test_a_bus_option_without_its_role_is_one_line(args, words):
    """A source's option without --bus (or an edge's without --from-bus) would do nothing:
    refused before anything starts, one line, exit 1."""
    run = subprocess.run(
        [*IBSTREAM, "serve", "--port", "0", "--ib-port", "1", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 1
    assert_one_line(run.stderr, "serve", *words)


def test_bus_options_with_their_role_are_taken():
    parser = build_parser()
    args = parser.parse_args(["serve", "--bus", "nats://h:4222", "--bus-buffer", "9"])
    assert bus_options.misplaced(args) is None and serve_settings(args).bus_buffer == 9
    args = parser.parse_args(["serve", "--from-bus", "nats://h:4222", "--bus-lease", "5"])
    assert bus_options.misplaced(args) is None and serve_settings(args).bus_lease == 5
    assert bus_options.misplaced(parser.parse_args(["serve"])) is None


async def test_a_port_no_socket_takes_is_the_source_s_last_error():
    """From Python (no CLI check): the IB source says why it cannot connect (its task
    used to die of the OverflowError, leaving /health degraded with no last_error)."""
    source = IBSource("127.0.0.1", 70000, client_id=9, backoff_initial=0.05)
    try:
        with pytest.raises(StreamError, match="port"):
            await source.start(wait=0.5)
        assert "OverflowError" in source.status()["last_error"]
    finally:
        await source.stop()


# --- demo ----------------------------------------------------------------------------------


def test_demo_json_is_json_lines_only_from_the_first_line():
    run = subprocess.run(
        IBSTREAM + ["demo", "--seconds", "2", "--json"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]  # every line parses
    assert all(isinstance(x, dict) and x["type"] in DEMO_LINE_TYPES for x in lines), lines
    assert [x["type"] for x in lines[:2]] == ["start", "stream"]
    assert lines[0]["server"].startswith("http://127.0.0.1:")
    assert lines[1]["contract"]["symbol"] == "ES" and lines[1]["tick_types"] == ["bid_ask", "last"]
    *_, summary = lines
    assert summary["type"] == "summary" and set(summary) == SUMMARY_KEYS | {"type"}
    trades = [x for x in lines if x["type"] == "trade"]
    assert len(trades) == summary["total_trades"] > 0
    assert trades[-1]["delta"] == summary["net_delta"]
    assert summary["net_delta"] == summary["buy_volume"] - summary["sell_volume"]
    both = summary["buy_volume"] + summary["sell_volume"]
    assert summary["buy_pct"] == pytest.approx(100 * summary["buy_volume"] / both, abs=0.01)
    buys = sum(t["size"] for t in trades if t["side"] == "buy")
    assert buys == pytest.approx(summary["buy_volume"])


def test_demo_json_quiet_is_start_stream_summary():
    run = subprocess.run(
        IBSTREAM + ["demo", "--seconds", "1", "--json", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    kinds = [json.loads(line)["type"] for line in run.stdout.splitlines()]
    assert kinds[:2] == ["start", "stream"] and kinds[-1] == "summary" and "trade" not in kinds


def test_demo_prints_a_line_per_trade():
    run = subprocess.run(
        IBSTREAM + ["demo", "--seconds", "1.5"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    trade_lines = [ln for ln in run.stdout.splitlines() if " @ " in ln]
    total = int(
        next(ln for ln in run.stdout.splitlines() if ln.startswith("total trades")).split(":")[1]
    )
    assert len(trade_lines) == total > 0


def test_demo_with_an_unknown_contract_is_one_line_and_a_json_error():
    run = subprocess.run(
        IBSTREAM + ["demo", "--json", "--contract", "NOSUCH", "--seconds", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert_one_line(run.stderr, "demo", "NOSUCH")
    *_, last = [json.loads(line) for line in run.stdout.splitlines()]  # JSON lines only
    assert last["type"] == "error" and last["code"] == "CONTRACT_NOT_FOUND", last
    assert "NOSUCH" in last["message"]


def test_demo_rejects_bad_seconds():
    run = subprocess.run(
        IBSTREAM + ["demo", "--seconds", "0"], capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 2 and "--seconds" in run.stderr


# --- serve and gateway ---------------------------------------------------------------------


async def wait_for_line(
    proc: asyncio.subprocess.Process, text: str, seen: list[str] | None = None
) -> None:
    async with asyncio.timeout(WAIT + 10):
        while text not in (line := (await proc.stderr.readline()).decode()):
            assert line, f"process ended before logging {text!r}: {seen}"
            if seen is not None:
                seen.append(line)


async def stop_process(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    """SIGTERM, then the exit code and the rest of stderr."""
    proc.send_signal(signal.SIGTERM)
    rest = await asyncio.wait_for(proc.stderr.read(), 15)
    return await asyncio.wait_for(proc.wait(), 15), rest.decode()


async def assert_serves_then_stops_on_sigterm(*command: str, port: int) -> None:
    """Start a server process, check /health says IB is connected, SIGTERM, exit code 0."""
    proc = await asyncio.create_subprocess_exec(*command, stderr=asyncio.subprocess.PIPE)
    try:
        await wait_for_line(proc, "serving on")
        async with httpx.AsyncClient() as http:
            health = (await http.get(f"http://127.0.0.1:{port}/health")).json()
        assert health["status"] == "ok" and health["ib"]["connected"]
        assert (await stop_process(proc))[0] == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_serve_demo_answers_health_and_stops_cleanly_on_sigterm():
    port = free_port()
    await assert_serves_then_stops_on_sigterm(
        *IBSTREAM, "serve", "--demo", "--port", str(port), port=port
    )


async def test_gateway_command_serves_ib_insync():
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *IBSTREAM, "gateway", "--port", str(port), stderr=asyncio.subprocess.PIPE
    )
    source = IBSource("127.0.0.1", port, client_id=9)
    try:
        await wait_for_line(proc, "listening")
        await source.start(wait=10)
        assert (await source.resolve("AAPL")).contract_id == 265598
    finally:
        await source.stop()
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 15) == 0


@pytest.fixture
def busy_port():
    """A port some other program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


async def test_serve_on_a_busy_port_is_one_line(busy_port):
    rc, _, err = await run_cli("serve", "--port", str(busy_port), "--ib-port", "1")
    assert rc == 1
    assert_one_line(err, "serve", f"port {busy_port}", "in use", "--port")


async def test_serve_on_the_port_of_an_ibstream_server_says_so(server: ServerHandle):
    rc, _, err = await run_cli("serve", "--port", str(server.port))
    assert rc == 1
    line = assert_one_line(err, "serve", f"port {server.port}", "--port")
    assert "in use by an ibstream server" in line and "run_server.py status" in line


async def test_gateway_on_a_busy_port_is_one_line(busy_port):
    rc, _, err = await run_cli("gateway", "--port", str(busy_port))
    assert rc == 1
    assert_one_line(err, "gateway", f"port {busy_port} is in use", "--port")


async def test_serve_off_loopback_without_a_token_is_refused_in_one_line():
    env = {k: v for k, v in os.environ.items() if k != "IBSTREAM_TOKEN"}
    rc, _, err = await run_cli("serve", "--demo", "--host", "0.0.0.0", "--port", "0", env=env)
    assert rc == 1
    assert_one_line(err, "serve", "0.0.0.0", "--token", "IBSTREAM_TOKEN")


async def test_serve_off_loopback_takes_the_token_from_the_environment_and_enforces_it():
    port, page = free_port(), "http://page.example"
    proc = await asyncio.create_subprocess_exec(
        *IBSTREAM, "-vv", "serve", "--demo", "--host", "0.0.0.0", "--port", str(port),
        "--allow-origin", page,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "IBSTREAM_TOKEN": SECRET},
    )  # fmt: skip
    seen: list[str] = []
    try:
        await wait_for_line(proc, "serving on", seen)
        url, auth = f"http://127.0.0.1:{port}/ws/stats", {"Authorization": f"Bearer {SECRET}"}
        async with httpx.AsyncClient() as http:
            assert (await http.get(url)).status_code == 401
            assert (await http.get(url, params={"token": SECRET})).status_code == 200
            assert (await http.get(url, headers=auth)).status_code == 200
            assert (await http.get(url, headers={**auth, "Origin": page})).status_code == 200
            other = {**auth, "Origin": "http://elsewhere.example"}
            assert (await http.get(url, headers=other)).status_code == 403
        rc, rest = await stop_process(proc)
        assert rc == 0
        assert SECRET not in "".join(seen) + rest  # not even in debug logs
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_an_unreachable_ib_is_said_once_and_the_server_serves_degraded():
    with socket.socket() as refusing:  # bound, never listening: connections are refused
        refusing.bind(("127.0.0.1", 0))
        ib_port, port = refusing.getsockname()[1], free_port()
        proc = await asyncio.create_subprocess_exec(
            *IBSTREAM, "serve", "--port", str(port), "--ib-port", str(ib_port),
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        seen: list[str] = []
        try:
            await wait_for_line(proc, "serving on", seen)
            async with httpx.AsyncClient() as http:
                health = (await http.get(f"http://127.0.0.1:{port}/health")).json()
            assert health["status"] == "degraded" and not health["ib"]["connected"]
            rc, rest = await stop_process(proc)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert rc == 0
    log = "".join(seen) + rest
    about_ib = [line for line in log.splitlines() if f":{ib_port}" in line and "IB" in line]
    assert len(about_ib) == 2, log  # the warning, and "server on ... (IB host:port)"
    (warning,) = [line for line in about_ib if "WARNING" in line]
    assert "could not connect to IB" in warning and "TWS / IB Gateway" in warning
    assert "Traceback" not in log and "ERROR" not in log
