"""`ibstream gateway --replay DIR`: a recording played to TWS API clients, so ib_insync, the
server and a client see the recorded session (the `make demo` pipeline on a recording).

The recording is made the way the recorder writes one (`build_parts` + `write_part`) from
real market data: the CME ES sample shipped in `ibstream/datasets/recorded`, IB's time taken
from the venue's event time.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pytest

import ibstream.store
from ibstream.client import AsyncClient
from ibstream.datasets import BUNDLED
from ibstream.gateway import GatewaySimulator
from ibstream.gateway.recorded import NotARecording, load_recording
from ibstream.ib.api import load as load_ib_lib
from ibstream.model import ContractInfo, Tick, TickType
from ibstream.server.run import start_server
from ibstream.server.settings import ServerSettings
from ibstream.store import layout
from ibstream.store.parts import build_parts, write_part
from tests.conftest import WAIT, checked
from tests.test_cli import IBSTREAM, assert_one_line, free_port, wait_for_line

SAMPLE = BUNDLED / "cme-esu4-2024-07-01"
ESU4 = ContractInfo(
    contract_id=551601561, symbol="ES", sec_type="FUT", exchange="CME", currency="USD",
    local_symbol="ESU4", min_tick=0.25, description="E-mini S&P 500",
    last_trade_date="20240920", multiplier="50",
)  # fmt: skip
SPEED = 200.0  # the sample's 4 minutes in about a second
COMPARED = [
    "contract_id", "tick_type", "price", "size", "bid_price", "bid_size", "ask_price",
    "ask_size", "exchange", "conditions", "ib_time",
]  # fmt: skip


def record_sample(store: Path) -> pd.DataFrame:
    """Write the sample as a recording; return what the store holds, in arrival order."""
    trades = pd.read_csv(SAMPLE / "trades.csv.xz")
    quotes = pd.read_csv(SAMPLE / "quotes.csv.xz")
    recv = np.concatenate([trades["ts_recv_ns"], quotes["ts_recv_ns"]]).astype(np.int64)
    order = np.lexsort((np.repeat([0, 1], [len(trades), len(quotes)]), recv))
    # the server's receive stamps are strictly increasing: ties get a nanosecond apart
    recv[order] = np.maximum.accumulate(recv[order] - np.arange(len(order))) + np.arange(len(order))
    stamps = iter(recv.tolist())
    last = [
        Tick(ESU4.contract_id, TickType.LAST, next(stamps), price=float(r.price),
             size=float(r.size), exchange="CME", ib_time=int(r.ts_event_ns) // 10**9)
        for r in trades.itertuples()
    ]  # fmt: skip
    bid_ask = [
        Tick(ESU4.contract_id, TickType.BID_ASK, next(stamps), bid_price=float(r.bid_price),
             bid_size=float(r.bid_size), ask_price=float(r.ask_price),
             ask_size=float(r.ask_size), ib_time=int(r.ts_event_ns) // 10**9)
        for r in quotes.itertuples()
    ]  # fmt: skip
    for tick_type, ticks in (("last", last), ("bid_ask", bid_ask)):
        sequences = range(1, len(ticks) + 1)
        for part in build_parts(ESU4, tick_type, ticks, sequences, "rec-1"):
            write_part(layout.open_root(store), part, "rec-1", ESU4.to_dict())
    table = layout.ticks_dataset(layout.open_root(store)).to_table()
    table = table.take(pc.sort_indices(table, [("time", "ascending")]))
    frame = table.to_pandas()
    frame["tick_type"] = frame["tick_type"].astype(str)
    return frame.reset_index(drop=True)


def same_ticks(got: pd.DataFrame, recorded: pd.DataFrame) -> None:
    """The client's frame holds the recorded ticks, in the recorded order."""
    frame = got.reset_index(drop=True)[COMPARED].assign(tick_type=lambda f: f.tick_type.astype(str))
    expected = recorded[COMPARED].astype(frame.dtypes.to_dict())
    pd.testing.assert_frame_equal(frame, expected, check_categorical=False)


@pytest.fixture
def recording(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    store = tmp_path / "store"
    return store, record_sample(store)


async def collect_replay(store: Path, ticks: int, loop: bool = False) -> pd.DataFrame:
    """Gateway replaying `store` -> ib_insync -> server -> `AsyncClient.collect`; the replay
    clock is held until both upstream streams are subscribed."""
    replay = load_recording(store, speed=SPEED, loop=loop, held=True)
    async with GatewaySimulator(port=0, replay=replay) as gateway:
        settings = ServerSettings(
            port=0, ib_port=gateway.port, client_id=random.randint(100, 10_000),
            sent_observer=checked(None),
        )  # fmt: skip
        async with await start_server(settings) as server, AsyncClient(server.url) as client:
            task = asyncio.ensure_future(
                client.collect("ES", ["bid_ask", "last"], limit=ticks, progress=False)
            )
            await gateway.wait_for(lambda: len(gateway.subscriptions) == 2 or task.done())
            replay.clock.release()
            async with asyncio.timeout(WAIT * 3):
                return await task


async def test_the_demo_pipeline_on_a_recording_gets_the_recorded_ticks(recording):
    store, recorded = recording
    frame = await collect_replay(store, len(recorded))
    same_ticks(frame, recorded)
    (contract,) = frame.attrs["contracts"]
    assert (contract["contract_id"], contract["local_symbol"]) == (ESU4.contract_id, "ESU4")
    assert (contract["min_tick"], contract["multiplier"]) == (0.25, "50")


async def test_loop_starts_the_recording_over_after_its_last_tick(recording):
    store, recorded = recording
    frame = await collect_replay(store, 2 * len(recorded), loop=True)
    same_ticks(frame.iloc[: len(recorded)], recorded)
    same_ticks(frame.iloc[len(recorded) :], recorded)


async def test_what_the_recorder_wrote_replays_as_it_was_streamed(make_server, tmp_path):
    """`serve --record` on the synthetic market, then that store through the replaying
    gateway: the client gets the recorded session again, tick for tick."""
    store = tmp_path / "rec"
    server = await make_server(record=str(store), record_flush=0.2)
    async with AsyncClient(server.url) as client:
        live = await client.collect("ES", ["bid_ask", "last"], limit=300, progress=False)
    await server.stop()  # a clean stop writes what is left
    recorded = ibstream.store.open(store).ticks().reset_index(drop=True)
    assert len(recorded) >= 300 and set(recorded["tick_type"].astype(str)) == {"bid_ask", "last"}
    same_ticks(live, recorded.iloc[: len(live)].assign(tick_type=lambda f: f.tick_type.astype(str)))
    frame = await collect_replay(store, len(recorded))
    same_ticks(frame, recorded.assign(tick_type=lambda f: f.tick_type.astype(str)))
    assert frame.attrs["contracts"][0]["local_symbol"] == "ESZ6"


def test_the_recording_sets_contracts_and_session_day(recording):
    store, recorded = recording
    replay = load_recording(store)
    (contract,) = replay.contracts
    assert (contract.con_id, contract.local_symbol, contract.sec_type) == (551601561, "ESU4", "FUT")
    assert str(GatewaySimulator(replay=replay).session_date) == "2024-07-01"
    assert replay.ticks == len(recorded)


@pytest.mark.parametrize("speed", [0, -1.0, float("inf"), "2"])
def test_a_speed_that_is_not_a_positive_number_is_refused(recording, speed):
    with pytest.raises(ValueError, match="speed must be a number above 0"):
        load_recording(recording[0], speed=speed)


def test_what_holds_no_ticks_is_not_a_recording(tmp_path):
    (tmp_path / "ticks" / "date=2024-07-01").mkdir(parents=True)
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "other").mkdir()
    for where, words in [
        (tmp_path / "missing", "does not exist"),
        (tmp_path / "file.txt", "is a file"),
        (tmp_path / "other", "is not a recording"),
        (tmp_path, "is not a recording yet: it holds no ticks"),
    ]:
        with pytest.raises(NotARecording, match=words):
            load_recording(where)


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--replay", "{file}"], 1, ["--replay", "is a file"]),
        (["--replay", "{empty}"], 1, ["--replay", "not a recording", "--record"]),
        (["--replay", "{empty}", "--speed", "0"], 2, ["--speed", "above 0"]),
        (["--speed", "2"], 1, ["--replay DIR"]),
    ],
)
def test_bad_replay_options_are_one_line(tmp_path, args, code, words):
    (tmp_path / "file").write_text("not a store")
    (tmp_path / "empty").mkdir()
    argv = [a.format(file=tmp_path / "file", empty=tmp_path / "empty") for a in args]
    run = subprocess.run(
        [*IBSTREAM, "gateway", "--port", "0", *argv], capture_output=True, text=True, timeout=30
    )
    assert run.returncode == code
    if code == 2:  # argparse's line
        assert len(run.stderr.strip().splitlines()) == 1, run.stderr
        assert all(w in run.stderr for w in words), run.stderr
    else:
        assert_one_line(run.stderr, "gateway", *words)


async def test_the_gateway_command_replays_to_ib_insync(recording):
    """`ibstream gateway --replay DIR` as its own process: ib_insync resolves the recorded
    contract and gets the recorded trades tick by tick, IB's times as recorded."""
    store, recorded = recording
    ib_lib = load_ib_lib()
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *IBSTREAM, "gateway", "--port", str(port), "--replay", str(store), "--speed", str(SPEED),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await wait_for_line(proc, "listening on")
        ib = ib_lib.IB()
        await ib.connectAsync("127.0.0.1", port, clientId=random.randint(1, 10_000))
        try:
            (details,) = await ib.reqContractDetailsAsync(
                ib_lib.Contract(symbol="ES", secType="FUT", exchange="CME")
            )
            assert details.contract.localSymbol == "ESU4" and details.minTick == 0.25
            trades = recorded[recorded.tick_type == "last"]
            seen: list[tuple] = []
            done = asyncio.Event()
            on_wire = ib.wrapper.tickByTickAllLast

            def all_last(req_id, kind, ib_time, price, size, *rest):  # noqa: ANN001, ANN202
                # what the wire carries: the Ticker would show ib_insync's receive time instead
                seen.append((price, float(size), ib_time))
                if len(seen) == len(trades):
                    done.set()
                on_wire(req_id, kind, ib_time, price, size, *rest)

            ib.wrapper.tickByTickAllLast = all_last
            ib.reqTickByTickData(details.contract, "Last")
            async with asyncio.timeout(WAIT * 3):
                await done.wait()
            expected = [
                (p, s, int(t.timestamp()))
                for p, s, t in trades[["price", "size", "ib_time"]].itertuples(index=False)
            ]
            assert seen == expected
        finally:
            ib.disconnect()
    finally:
        proc.terminate()
        await proc.wait()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
