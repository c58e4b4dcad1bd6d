"""The console script as a user runs it: `ibstream demo`, `ibstream serve`, `ibstream gateway`.
(`server/run_server.py` is tested in test_run_server.py.)"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys

import httpx
import pytest

from ibstream.ib.source import IBSource

IBSTREAM = [sys.executable, "-m", "ibstream"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_json_summary_is_the_last_line():
    run = subprocess.run(
        IBSTREAM + ["demo", "--seconds", "2", "--json", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert set(summary) == {"total_trades", "buy_volume", "sell_volume", "net_delta", "buy_pct"}
    assert summary["total_trades"] > 0
    assert summary["net_delta"] == summary["buy_volume"] - summary["sell_volume"]
    both = summary["buy_volume"] + summary["sell_volume"]
    assert summary["buy_pct"] == pytest.approx(100 * summary["buy_volume"] / both, abs=0.01)
    assert any("total trades" in line for line in lines)


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


def test_demo_rejects_bad_seconds():
    run = subprocess.run(
        IBSTREAM + ["demo", "--seconds", "0"], capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 2 and "--seconds" in run.stderr


async def wait_for_line(proc: asyncio.subprocess.Process, text: str, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while text not in (line := (await proc.stderr.readline()).decode()):
            assert line, f"process ended before logging {text!r}"


async def assert_serves_then_stops_on_sigterm(*command: str, port: int) -> None:
    """Start a server process, check /health says IB is connected, SIGTERM, exit code 0."""
    proc = await asyncio.create_subprocess_exec(*command, stderr=asyncio.subprocess.PIPE)
    try:
        await wait_for_line(proc, "serving on")
        async with httpx.AsyncClient() as http:
            health = (await http.get(f"http://127.0.0.1:{port}/health")).json()
        assert health["status"] == "ok" and health["ib"]["connected"]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
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
