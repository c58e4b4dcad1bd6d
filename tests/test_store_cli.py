"""`ibstream store ls|show|compact` as a user runs them: text and `--json` lines that agree
with the store, and one line on stderr with a non-zero exit for what a user can fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

import ibstream.store
from ibstream.store import layout, parts
from tests.store_data import ES, record

IBSTREAM = [sys.executable, "-m", "ibstream"]


def run(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*IBSTREAM, "store", *map(str, args)], capture_output=True, text=True, timeout=60
    )


def lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "rec"
    record(path, flush=300)
    start = 1719878410_000_000_000  # 2024-07-02 00:00:10 UTC
    gap = {
        "contract_id": ES.contract_id,
        "tick_type": "last",
        "start": start,
        "end": start + 10**9,
        "reason": "server_restarted",
        "server_id": "s0",
        "after_sequence": 7,
        "status": "open",
        "message": "stopped without a clean shutdown",
    }
    root = layout.open_root(path)
    table = pa.Table.from_pylist([gap], schema=layout.GAP_SCHEMA)
    parts.write_table(root, root.path(layout.gap_dir("2024-07-02"), "g.parquet"), table)
    return path


def test_ls_lists_ticks_per_contract_and_day(folder):
    sessions = ibstream.store.open(folder).sessions()
    done = run("ls", folder, "--json")
    assert done.returncode == 0 and done.stderr == ""
    got = lines(done.stdout)
    assert [(s["date"], s["contract_id"], s["ticks"], s["ticks_last"]) for s in got] == list(
        sessions[["date", "contract_id", "ticks", "ticks_last"]].itertuples(index=False, name=None)
    )
    assert all(s["type"] == "session" for s in got)
    text = run("ls", folder).stdout.splitlines()
    assert len(text) == len(sessions) and "ES (ESU4)" in text[-1] and "1719 ticks" in text[-1]


def test_show_gives_counts_first_last_and_gaps_of_a_day(folder):
    ticks = ibstream.store.open(folder).ticks("ES", start="2024-07-02")
    done = run("show", folder, "ESU4", "--date", "2024-07-02", "--json")
    assert done.returncode == 0, done.stderr
    got = lines(done.stdout)
    streams = {s["tick_type"]: s for s in got if s["type"] == "stream"}
    assert {k: s["ticks"] for k, s in streams.items()} == ticks.tick_type.value_counts()[
        lambda n: n > 0
    ].to_dict()
    last = ticks[ticks.tick_type == "last"]
    assert streams["last"]["first_tick"] == last.index[0].isoformat()
    assert streams["last"]["last_tick"] == last.index[-1].isoformat()
    (gap,) = [g for g in got if g["type"] == "gap"]
    assert (gap["reason"], gap["after_sequence"]) == ("server_restarted", 7)
    text = run("show", folder, "ES", "--date", "2024-07-02").stdout
    assert "92 ticks" in text and "server_restarted" in text
    assert (
        "no ticks of ES on 2024-07-03" in run("show", folder, "ES", "--date", "2024-07-03").stdout
    )


def test_compact_merges_and_says_what_it_did(tmp_path):
    expected = record(tmp_path, flush=200)
    done = run("compact", tmp_path, "--json")
    assert done.returncode == 0, done.stderr
    (report,) = lines(done.stdout)
    assert report["type"] == "compacted" and report["hours"] > 0 and report["rows"] > 0
    assert len(list((tmp_path / "ticks").rglob("*.parquet"))) == 6  # partition-hours
    assert len(ibstream.store.open(tmp_path).ticks()) == len(expected)
    assert run("compact", tmp_path).stdout.startswith("compacted 0 partition-hours")


@pytest.mark.parametrize(
    "args, code, words",
    [
        (("ls", "{tmp}/missing"), 1, ["STORE_NOT_FOUND", "missing"]),
        (("ls", "{tmp}/file"), 1, ["NOT_A_DIRECTORY"]),
        (("compact", "{tmp}"), 1, ["NOT_A_RECORDING"]),
        (("show", "{rec}", "NQ"), 1, ["CONTRACT_NOT_FOUND", "'NQ'", "ES (ESU4)"]),
        (("show", "{rec}", "ES", "--date", "2024-13-01"), 2, ["--date", "YYYY-MM-DD"]),
    ],
)
def test_what_a_user_can_fix_is_one_line(folder, tmp_path, args, code, words):
    (tmp_path / "file").write_text("not a store")
    done = run(*(a.format(tmp=tmp_path, rec=folder) for a in args))
    assert done.returncode == code and done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("ibstream") and "Traceback" not in done.stderr
    assert all(word in line for word in words), line
