"""`ibstream history CONTRACT --start --end --to FILE.parquet` as a subprocess against a real
server and simulator: the file reads back as the tick frame and holds what an independent
ib_insync client received live; every problem is one line and an exit code."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pandas as pd
import pytest

from ibstream.client.frames import TICK_COLUMNS, conform_ticks
from ibstream.gateway import GatewaySimulator
from tests.conftest import ServerFactory
from tests.history_fixtures import ES_ID, GroundTruth
from tests.test_cli import assert_one_line, run_cli
from tests.test_history_client import truth_frame_keys
from tests.test_history_server import KINDS, market_past, truth_keys, watched

NS = 1_000_000_000


@pytest.fixture
async def truth(gateway: GatewaySimulator) -> AsyncIterator[GroundTruth]:
    async with watched(gateway) as found:
        yield found


async def test_history_writes_a_file_that_reads_back_as_the_tick_frame(
    make_server: ServerFactory, truth: GroundTruth, tmp_path: Path
):
    server = await make_server()
    first, end = await market_past(truth, 3)
    path = tmp_path / "es.parquet"
    code, out, err = await run_cli(
        "history", "ES", "--start", str(first), "--end", str(end), "--to", str(path),
        "--tick-types", "bid_ask,all_last", "--server", server.url,
    )  # fmt: skip
    line = assert_one_line(err, "history", "wrote", str(path), "from IB")
    assert code == 0 and out == "", (code, out, err)
    frame = pd.read_parquet(path)
    assert dict(frame.dtypes) == TICK_COLUMNS and frame.index.name == "time"
    pd.testing.assert_frame_equal(conform_ticks(frame), frame)
    assert f"wrote {len(frame):,} ticks" in line
    for kind in KINDS:
        expected = truth_keys(truth, kind, first, end)
        assert sum(expected.values()) > 50
        assert truth_frame_keys(frame, kind, first, end) == expected, kind
    assert frame.attrs["contracts"][0]["contract_id"] == ES_ID
    assert frame.attrs["history"]["from_ib"] == len(frame)


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--start", "2026-01-02", "--end", "2026-01-01"], 2, ["--start", "is not before end"]),
        (["--start", "2099-01-01"], 2, ["--start", "in the future"]),
        (["--start", "soon"], 2, ["--start", "duration"]),
        (["--start", "1h", "--tick-types", "trades"], 2, ["unknown tick type 'trades'"]),
    ],
)
async def test_bad_arguments_are_one_line_and_exit_2(tmp_path, args, code, words):
    result = await run_cli("history", "ES", *args, "--to", str(tmp_path / "x.parquet"),
                           "--server", "http://127.0.0.1:9")  # fmt: skip
    assert result[0] == code, result
    assert_one_line(result[2], "history", *words)
    assert not (tmp_path / "x.parquet").exists()


async def test_server_and_contract_errors_are_one_line_and_exit_1(
    make_server: ServerFactory, tmp_path: Path
):
    server = await make_server()
    path = tmp_path / "x.parquet"
    code, _, err = await run_cli(
        "history", "NOSUCHTHING", "--start", "1min", "--to", str(path), "--server", server.url
    )
    assert code == 1 and not path.exists()
    assert_one_line(err, "history", "CONTRACT_NOT_FOUND")
    code, _, err = await run_cli(
        "history", "ES", "--start", "1min", "--to", str(path), "--server", "http://127.0.0.1:9"
    )
    assert code == 1 and not path.exists()
    assert_one_line(err, "history", "CONNECTION_ERROR", "is the server running")
    code, _, err = await run_cli(
        "history", "ES", "--start", "1min", "--to", str(tmp_path / "no" / "x.parquet"),
        "--server", server.url,
    )  # fmt: skip
    assert code == 2
    assert_one_line(err, "history", "--to", "existing directory")


async def test_a_part_ib_refuses_is_a_warning_line_and_exit_3(
    make_server: ServerFactory, gateway: GatewaySimulator, truth: GroundTruth, tmp_path: Path
):
    server = await make_server()
    first, end = await market_past(truth, 2)
    gateway.fail_next("historical_ticks", 354)  # one tick type's first page
    path = tmp_path / "es.parquet"
    code, _, err = await run_cli(
        "history", "ES", "--start", str(first), "--end", str(end), "--to", str(path),
        "--tick-types", "bid_ask,all_last", "--server", server.url,
    )  # fmt: skip
    lines = err.strip().splitlines()
    assert code == 3, err
    assert lines[0].startswith("ibstream history: warning: history of ES is incomplete")
    assert "IB 354" in lines[0] and lines[1].startswith("ibstream history: wrote")
    assert len(pd.read_parquet(path)) > 0
