"""`ibstream replay DIR` as a user runs it (the console script in a subprocess): it serves
a recording that `Client.collect` gets back whole, skips a corrupt part with a warning
naming it, and answers every bad input with one line, a non-zero exit and nothing changed
on disk."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import ibstream
from tests.conftest import WAIT
from tests.replay_fixtures import Recorded, make_recording
from tests.test_cli import (
    assert_one_line,
    run_cli,
)
from tests.test_cli import (
    test_help_shows_the_default_of_every_option_that_takes_a_value as check_help_defaults,
)

IBSTREAM = [sys.executable, "-m", "ibstream"]


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    return make_recording(tmp_path_factory.mktemp("recording"), ticks=1_000)


def tree(path: Path) -> dict[str, tuple[int, int]]:
    """Every file under `path` with its size and modification time."""
    return {
        str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(path.rglob("*"))
    }


async def serving(*args: str) -> tuple[asyncio.subprocess.Process, str, list[str]]:
    """Start `ibstream replay ARGS --port 0`; the URL once it says it is serving, and the
    stderr lines before that."""
    proc = await asyncio.create_subprocess_exec(
        *IBSTREAM, "replay", *args, "--port", "0", stderr=subprocess.PIPE
    )
    assert proc.stderr is not None
    lines: list[str] = []
    async with asyncio.timeout(WAIT * 2):
        while True:
            line = (await proc.stderr.readline()).decode()
            assert line, f"replay exited: {lines}"
            lines.append(line)
            found = re.search(r"serving on (http://\S+)", line)
            if found:
                return proc, found[1], lines


async def stopped(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGINT)
    async with asyncio.timeout(WAIT):
        await proc.communicate()
    return proc.returncode  # type: ignore[return-value]


async def test_the_command_serves_the_recording_and_skips_a_corrupt_part(recording, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(recording.path, copy)
    es = recording.id_of("ES")
    first = next((copy / "ticks").rglob(f"contract_id={es}/tick_type=last/*.parquet"))
    corrupt = first.with_name("23-0000000000000000001-broken.parquet")
    corrupt.write_bytes(b"PAR1 this is not a parquet file")
    before = tree(copy)
    proc, url, lines = await serving(str(copy), "--speed", "max", "--contract", "ES")
    try:
        frame = await asyncio.to_thread(collect, url)
    finally:
        code = await stopped(proc)
    assert any("skipping unreadable part" in line and corrupt.name in line for line in lines)
    pd.testing.assert_frame_equal(frame, recording.frame(es))
    assert code == 0
    assert tree(copy) == before  # nothing written


def collect(url: str) -> pd.DataFrame:
    with ibstream.Client(url, transport="sse") as client:
        return client.collect("ES", progress=False)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["{file}"], ["is a file"]),
        (["{missing}"], ["does not exist"]),
        (["{empty}"], ["not a recording"]),
        (["{rec}", "--contract", "NQ"], ["'NQ' is not in this recording", "ESZ6"]),
        (
            ["{rec}", "--start", "2026-12-07T12:00:00Z", "--end", "2026-12-07T11:00:00Z"],
            ["not before"],
        ),
        (["{rec}", "--start", "2031-01-01"], ["no recorded ticks", "spans"]),
    ],
)
async def test_bad_input_is_one_line_and_changes_nothing(recording, tmp_path, args, words):
    places = {
        "file": tmp_path / "a-file.txt",
        "missing": tmp_path / "missing",
        "empty": tmp_path / "empty",
        "rec": recording.path,
    }
    places["file"].write_text("not a recording")
    places["empty"].mkdir()
    before = {name: tree(p) if p.is_dir() else None for name, p in places.items()}
    argv = [a.format(**{k: str(v) for k, v in places.items()}) for a in args]
    code, out, err = await run_cli("replay", *argv, "--port", "0")
    assert code == 1, err
    assert_one_line(err, "replay", *words)
    assert {name: tree(p) if p.is_dir() else None for name, p in places.items()} == before
    assert not places["missing"].exists()


@pytest.mark.parametrize("speed", ["0", "-2", "fast"])
async def test_a_speed_that_is_not_above_zero_or_max_is_refused(recording, speed):
    code, _, err = await run_cli("replay", str(recording.path), "--speed", speed)
    assert code == 2 and "Traceback" not in err
    assert "--speed" in err and len(err.strip().splitlines()) == 1


def test_replay_is_listed_in_the_help_with_every_default():
    run = subprocess.run(IBSTREAM + ["--help"], capture_output=True, text=True, timeout=30)
    assert "replay" in run.stdout
    check_help_defaults("replay")
