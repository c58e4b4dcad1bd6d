"""`ibstream delta`: the console script against a real server, checked against the batch
analytics computed on the very ticks the command saw."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import re
import signal
import sys

import pytest

from ibstream.analytics import METHODS, classify
from ibstream.analytics.delta import cumulative_delta, rolling, signed_volume, summary
from ibstream.cli.delta import run_delta
from ibstream.cli.delta_view import DeltaStudy
from ibstream.client import AsyncClient
from ibstream.client.frames import ticks_to_frame
from ibstream.model import iso_timestamp
from tests.client_fixtures import free_port
from tests.conftest import WAIT, Changes
from tests.proxy import TcpProxy

IBSTREAM = [sys.executable, "-m", "ibstream", "delta"]
ES = 637533641
TRANSPORTS = ("websocket", "sse")
UPDATE_KEYS = {"type", "study", "contract_id", "timestamp", "window_seconds", "data"}
TRADE_KEYS = {"type", "timestamp", "side", "size", "price", "bid", "ask", "delta"}
SUMMARY_KEYS = {"type", "total_trades", "buy_volume", "sell_volume", "net_delta", "buy_pct"}
STATS_KEYS = {
    "total_buy_volume",
    "total_sell_volume",
    "net_delta",
    "buy_sell_ratio",
    "buy_pct",
    "trade_count",
}
TRADES_WANTED = 40
SECRET = "delta-study-token-42"
ROW = re.compile(r"^\d\d:\d\d:\d\d\.\d{3}\s")


async def delta_process(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *IBSTREAM, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


async def read_line(stream: asyncio.StreamReader) -> str:
    line = (await asyncio.wait_for(stream.readline(), WAIT)).decode()
    assert line, "the command ended early"
    return line


def check_update(update: dict) -> dict:
    assert set(update) == UPDATE_KEYS and update["study"] == "delta" and update["type"] == "update"
    assert set(update["data"]) == {"current_delta", "cumulative_delta", "period_stats"}
    assert set(update["data"]["period_stats"]) == STATS_KEYS
    return update


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_json_updates_equal_the_batch_analytics_on_the_same_ticks(
    server, gateway, transport, tmp_path
):
    """The flow is held while the test's own client and the command subscribe, so both see
    the same ticks from then on; the command ends on SIGINT once every trade is in."""
    market, changes, seen = gateway.market(ES), Changes(), []
    gateway.set_rate(0)
    output = tmp_path / "delta.jsonl"
    args = ["ES", "--server", server.url, "--transport", transport, "--json", "--output"]
    async with AsyncClient(server.url, transport) as client:
        await client.stream(ES, on_tick=lambda t: (seen.append(t), changes.notify()))
        proc = await delta_process(*args, str(output))
        try:
            while "delta study of ESZ6" not in await read_line(proc.stderr):
                pass  # the command is subscribed once it says what it studies
            mark, first = len(seen), market.trade_count
            gateway.set_rate(200.0)
            await gateway.wait_for(lambda: market.trade_count - first >= TRADES_WANTED, WAIT)
            gateway.set_rate(0)
            sent = market.trade_count - first
            await changes.until(lambda: sum(t["tick_type"] == "last" for t in seen) >= sent)
            lines, trade_lines = [], []
            while not lines or lines[-1]["data"]["period_stats"]["trade_count"] < sent:
                line = json.loads(await read_line(proc.stdout))
                if line["type"] == "trade":
                    assert set(line) == TRADE_KEYS
                    trade_lines.append(line)
                else:
                    lines.append(check_update(line))
            proc.send_signal(signal.SIGINT)
            rest, err = await asyncio.wait_for(proc.communicate(), WAIT)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, err.decode()
    rest_lines = rest.decode().splitlines()
    final = json.loads(rest_lines[-1])  # the last stdout line: the summary, as the demo's
    assert len(rest_lines) == 1 and set(final) == SUMMARY_KEYS and final["type"] == "summary"
    trades = classify(ticks_to_frame(seen[mark:]))  # the ticks the command saw
    totals = summary(trades).iloc[0]
    assert final["total_trades"] == len(trades) == len(trade_lines)
    assert final["buy_volume"] == totals["buy_volume"]
    assert final["sell_volume"] == totals["sell_volume"]
    assert final["net_delta"] == totals["net_delta"]
    assert final["buy_pct"] == pytest.approx(totals["buy_pct"], abs=0.01)
    assert [t["side"] for t in trade_lines] == trades["side"].astype(str).tolist()
    assert [t["price"] for t in trade_lines] == trades["price"].tolist()
    assert [t["size"] for t in trade_lines] == trades["size"].tolist()
    assert [t["timestamp"] for t in trade_lines] == [iso_timestamp(i.value) for i in trades.index]
    assert len(trades) == sent == lines[-1]["data"]["period_stats"]["trade_count"]
    cumulative, signed = cumulative_delta(trades), signed_volume(trades)
    window = rolling(trades, "60s")
    for update in lines:  # within the 60 s window trade_count numbers the trades
        n = update["data"]["period_stats"]["trade_count"]
        assert update["contract_id"] == ES and update["window_seconds"] == 60
        assert update["timestamp"] == iso_timestamp(trades.index[n - 1].value)
        assert update["data"]["current_delta"] == signed.iloc[n - 1]
        assert update["data"]["cumulative_delta"] == cumulative.iloc[n - 1]
    stats, last = lines[-1]["data"]["period_stats"], window.iloc[-1]
    assert stats["total_buy_volume"] == last["buy_volume"]
    assert stats["total_sell_volume"] == last["sell_volume"]
    assert stats["net_delta"] == last["net_delta"] == cumulative.iloc[-1]
    assert stats["buy_pct"] == pytest.approx(last["buy_pct"], abs=0.01)
    assert stats["buy_sell_ratio"] == pytest.approx(last["buy_sell_ratio"], abs=1e-4)
    assert [t["delta"] for t in trade_lines] == cumulative.tolist()
    written = [json.loads(x) for x in output.read_text().splitlines()]
    assert written == sorted(lines + trade_lines, key=written.index) + [final]  # the same lines
    assert [x for x in written if x["type"] == "update"] == lines
    assert "delta summary" not in err.decode()  # no text summary in JSON mode


async def test_table_for_some_seconds_adds_up(server):
    proc = await delta_process("ES", "--server", server.url, "--seconds", "2", "--window", "30")
    out, err = await asyncio.wait_for(proc.communicate(), 3 * WAIT)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    rows = [line.split() for line in lines if ROW.match(line)]
    assert rows, out.decode()
    total = 0.0
    for row in rows:  # time price size bid ask side delta cumulative
        size, side, delta, cum = float(row[2]), row[5], float(row[6]), float(row[7])
        assert delta == {"BUY": size, "SELL": -size, "----": 0.0}[side]
        total += delta
        assert cum == total
    assert any(line.startswith("-- last 30s: buys") for line in lines)
    assert f"trades         : {len(rows)}" in lines
    assert f"net delta      : {total:+g}" in lines


async def test_bad_method_exits_2_naming_the_valid_ones():
    proc = await delta_process("ES", "--method", "guess", "--server", "http://127.0.0.1:9")
    out, err = await asyncio.wait_for(proc.communicate(), WAIT)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 2 and not out and len(lines) == 1
    assert "'guess'" in lines[0] and all(m in lines[0] for m in METHODS)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_unknown_contract_is_one_line_with_the_error_code(server, transport):
    proc = await delta_process("NOSUCH", "--server", server.url, "--transport", transport)
    out, err = await asyncio.wait_for(proc.communicate(), WAIT)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 1 and not out, err.decode()
    assert len(lines) == 1 and "CONTRACT_NOT_FOUND" in lines[0] and "NOSUCH" in lines[0]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_no_server_is_one_line_not_a_traceback(transport):
    url = f"http://127.0.0.1:{free_port()}"
    proc = await delta_process("ES", "--server", url, "--transport", transport, "--json")
    out, err = await asyncio.wait_for(proc.communicate(), 2 * WAIT)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 1
    assert len(lines) == 1 and "CONNECTION_ERROR" in lines[0] and url.split("//")[1] in lines[0]
    (last,) = [json.loads(line) for line in out.decode().splitlines()]  # as the demo ends
    assert last["type"] == "error" and last["code"] == "CONNECTION_ERROR"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_token_server_takes_the_token_from_the_environment(
    make_server, transport, monkeypatch
):
    server = await make_server(token=SECRET)
    monkeypatch.delenv("IBSTREAM_TOKEN", raising=False)
    proc = await delta_process("ES", "--server", server.url, "--transport", transport)
    out, err = await asyncio.wait_for(proc.communicate(), WAIT)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 1 and not out
    assert len(lines) == 1 and "AUTH_REQUIRED" in lines[0] and SECRET not in lines[0]
    monkeypatch.setenv("IBSTREAM_TOKEN", SECRET)
    proc = await delta_process("ES", "--server", server.url, "--transport", transport, "--json")
    try:
        assert json.loads(await read_line(proc.stdout))["type"] in ("trade", "update")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), WAIT) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_help_names_the_real_default_method():
    from ibstream.analytics import DEFAULT_METHOD
    from ibstream.cli import build_parser

    with pytest.raises(SystemExit), contextlib.redirect_stdout(io.StringIO()) as text:
        build_parser().parse_args(["delta", "--help"])
    assert f"(default: {DEFAULT_METHOD})" in " ".join(text.getvalue().split())


class Lines(io.StringIO):
    """An output that tells `Changes` about every write."""

    def __init__(self, changes: Changes):
        super().__init__()
        self.changes = changes

    def write(self, text: str) -> int:
        n = super().write(text)
        self.changes.notify()
        return n

    def lines(self) -> list[str]:
        return self.getvalue().splitlines()


async def test_reconnects_are_notes_on_stderr_and_the_delta_carries_on(server):
    changes = Changes()
    out, err, stop = Lines(changes), Lines(changes), asyncio.Event()
    async with TcpProxy(server.port) as proxy:
        args = argparse.Namespace(
            contract="ES", server=proxy.url, transport="websocket", token=None, window=60.0,
            method="quote", json=True, seconds=None,
        )  # fmt: skip
        study = asyncio.create_task(run_delta(args, out, err, stop))
        try:
            await changes.until(lambda: len(out.lines()) >= 5)
            assert proxy.cut() >= 1
            await changes.until(lambda: any("[reconnected]" in x for x in err.lines()))
            before = len(out.lines())
            await changes.until(lambda: len(out.lines()) >= before + 5)
        finally:
            stop.set()
            assert await asyncio.wait_for(study, WAIT) == 0
    written = [json.loads(line) for line in out.lines()]
    assert written[-1]["type"] == "summary"
    updates = [check_update(x) for x in written if x["type"] == "update"]
    counts = [u["data"]["period_stats"]["trade_count"] for u in updates]
    assert counts == sorted(set(counts))  # no trade lost and counted twice, none repeated
    trades = [x for x in written if x["type"] == "trade"]
    assert len(trades) == counts[-1] == written[-1]["total_trades"]
    assert any(x.startswith("[reconnecting]") for x in err.lines())
    assert proxy.accepted >= 2


def test_study_update_before_and_after_trades():
    study = DeltaStudy("quote", 60)
    study.contract = {"contract_id": 1, "local_symbol": "X", "min_tick": 0.25}
    assert study.update()["data"] == {
        "current_delta": 0,
        "cumulative_delta": 0,
        "period_stats": dict.fromkeys(STATS_KEYS, 0) | {"buy_sell_ratio": None, "buy_pct": None},
    }
    base = 1_764_000_000_000_000_000
    quote = {"contract_id": 1, "tick_type": "bid_ask", "sequence": 1, "recv_ns": base}
    quote |= {"bid_price": 10.0, "ask_price": 10.25, "bid_size": 1.0, "ask_size": 1.0}
    trades = [
        {"contract_id": 1, "tick_type": "last", "sequence": i, "recv_ns": base + i * 10**6}
        | {"price": 10.25, "size": float(i)}
        for i in (1, 2)
    ]
    got = study.feed([quote, *trades])
    assert [t.delta for t in got] == [1.0, 2.0] and [t.cumulative for t in got] == [1.0, 3.0]
    assert [t.side for t in got] == ["buy", "buy"]
    update = study.update()
    assert update["timestamp"] == iso_timestamp(base + 2 * 10**6)
    assert update["data"]["current_delta"] == 2 and update["data"]["cumulative_delta"] == 3
    stats = update["data"]["period_stats"]
    assert stats["buy_sell_ratio"] is None and stats["buy_pct"] == 100.0  # no sells: inf
    assert stats["trade_count"] == 2 and stats["net_delta"] == 3
