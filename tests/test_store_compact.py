"""Compaction: one file per partition and hour, rows in time order, none lost; a reader sees
every row exactly once at every step of the swap; `kill -9` of a real process at each step
leaves a store that `recover` finishes, every file readable by DuckDB and pyarrow."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

import ibstream.store
from ibstream.model import Tick, TickType
from ibstream.store import compact, layout, parts
from tests.store_data import ES, record

# A compaction that stops at the nth time it reaches a step, says so and waits to be killed.
CHILD = """
import sys
from ibstream.store import compact
folder, stop_at, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
seen = []
def step(name):
    seen.append(name)
    if seen.count(stop_at) == nth:
        print(name, flush=True)
        sys.stdin.read()
compact.compact(folder, on_step=step)
print("finished", flush=True)
"""
STEPS = ["merged", "journaled", "deleting", "deleted", "renamed"]


def part_files(folder: Path) -> list[Path]:
    return sorted((folder / "ticks").rglob("*.parquet"))


def hidden_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.is_file()]


def hours(folder: Path) -> Counter:
    return Counter((p.parent, p.name[:2]) for p in part_files(folder))


def assert_whole(folder: Path, expected: pd.DataFrame) -> None:
    """Every row once, every part readable by both engines."""
    got = ibstream.store.open(folder).ticks()
    pd.testing.assert_frame_equal(got, expected)
    for path in part_files(folder):
        pq.read_table(path)
        duckdb.sql(f"SELECT count(*) FROM read_parquet('{path}')").fetchall()


def test_one_time_ordered_file_per_partition_and_hour(tmp_path):
    expected = record(tmp_path, flush=100)
    before = hours(tmp_path)
    assert max(before.values()) > 1
    report = compact.compact(tmp_path)
    assert report.hours == sum(n > 1 for n in before.values())
    assert report.parts_merged == sum(n for n in before.values() if n > 1)
    assert set(hours(tmp_path)) == set(before) and set(hours(tmp_path).values()) == {1}
    for path in part_files(tmp_path):
        times = pq.read_table(path).column("time").to_numpy()
        assert (times[1:] >= times[:-1]).all()  # the sample has equal stamps
        meta = layout.read_file_metadata(pq.read_schema(path))
        assert meta["contract"]["contract_id"] == int(path.parent.parent.name.split("=")[1])
    assert_whole(tmp_path, expected)
    assert compact.compact(tmp_path).hours == 0
    assert not hidden_files(tmp_path / "ticks")


def test_a_reader_sees_every_row_once_at_every_step(tmp_path):
    expected = record(tmp_path, flush=150)
    store = ibstream.store.open(tmp_path)
    seen = []

    def read(step: str) -> None:
        seen.append(step)
        pd.testing.assert_frame_equal(store.ticks(), expected)
        assert store.sql("SELECT count(*) n FROM ticks").n.item() == len(expected)

    compact.compact(tmp_path, on_step=read)
    assert set(seen) == set(STEPS)


def test_a_late_part_is_merged_by_the_next_compaction(tmp_path):
    record(tmp_path, contracts=(ES,), flush=200)
    compact.compact(tmp_path)
    start = pd.Timestamp("2024-07-02 00:00:00.5", tz="UTC").value
    late = [Tick(ES.contract_id, TickType.LAST, start + i, 5500.0, 1.0) for i in range(3)]
    root = layout.open_root(tmp_path)
    for part in parts.build_parts(ES, "last", late, [1, 2, 3], "s2"):
        parts.write_part(root, part, "s2", ES.to_dict())
    assert max(hours(tmp_path).values()) == 2
    assert compact.compact(tmp_path).hours == 1 and set(hours(tmp_path).values()) == {1}
    ticks = ibstream.store.open(tmp_path).ticks("ES", "last", start="2024-07-02")
    assert ticks.index.is_monotonic_increasing and (ticks.price == 5500.0).sum() == 3


def test_only_hours_that_ended_before_are_compacted(tmp_path):
    record(tmp_path, contracts=(ES,), flush=100)
    midnight = pd.Timestamp("2024-07-02", tz="UTC").value
    compact.compact(tmp_path, before_ns=midnight)
    left = {str(path).split("date=")[1][:10]: n for (path, _), n in hours(tmp_path).items()}
    assert left["2024-07-01"] == 1 and left["2024-07-02"] > 1


@pytest.mark.parametrize("step", STEPS)
def test_kill_9_at_a_step_then_recover_leaves_every_row_once(tmp_path, step):
    expected = record(tmp_path, flush=150)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), step, "2"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == step  # paused at the step of the 2nd hour
        assert compact.compact(tmp_path).busy  # it holds the store's compaction lock
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(20) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()
    journaled = step != "merged"  # the journal is written after the merged file
    assert bool(list((tmp_path / "_state").glob("compact-*"))) == journaled
    pd.testing.assert_frame_equal(ibstream.store.open(tmp_path).ticks(), expected)  # before
    assert compact.recover(tmp_path) == (1 if journaled else 0)
    assert not hidden_files(tmp_path / "ticks") and not list(
        (tmp_path / "_state").glob("compact-*")
    )
    assert_whole(tmp_path, expected)
    compact.compact(tmp_path)
    assert set(hours(tmp_path).values()) == {1}
    assert_whole(tmp_path, expected)


def test_a_read_that_a_compaction_overtakes_is_done_again(tmp_path):
    """The parts a read listed and checked are swapped before it reads them: it reads again."""
    expected = record(tmp_path, flush=150)
    store = ibstream.store.open(tmp_path)
    read, overtaken = store._read, []

    def compact_first(found, lo, hi):
        if not overtaken:  # once, between the listing and the read
            overtaken.append(compact.compact(tmp_path))
        return read(found, lo, hi)

    store._read = compact_first
    pd.testing.assert_frame_equal(store.ticks(), expected)
    assert overtaken and overtaken[0].hours > 0
