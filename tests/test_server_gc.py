"""The server process's garbage collector: what `ibstream serve` sets after start-up.

Full collections walked every object of the imported libraries (40-70 ms about once a
second on the loop that sends every tick); `tune_gc` freezes them out of collection and
collects the young generation less often. It changes the whole process, so it runs in a
child process here, as it does in `ibstream serve` (never in a notebook that embeds the
server)."""

from __future__ import annotations

import subprocess
import sys

import orjson

from ibstream.server.run import GC_YOUNG_THRESHOLD

SCRIPT = """
import gc, json
import ibstream.server.run as run
before = {"frozen": gc.get_freeze_count(), "threshold": gc.get_threshold()}
run.tune_gc()
after = {"frozen": gc.get_freeze_count(), "threshold": gc.get_threshold()}
print(json.dumps({"before": before, "after": after}))
"""


def test_tune_gc_freezes_what_start_up_made_and_raises_the_young_threshold():
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, check=True, timeout=60
    ).stdout
    got = orjson.loads(out)
    assert got["before"]["frozen"] == 0
    assert got["after"]["frozen"] > 10_000  # the server's imports, out of every collection
    assert got["after"]["threshold"][0] == GC_YOUNG_THRESHOLD > got["before"]["threshold"][0]
    assert got["after"]["threshold"][1:] == got["before"]["threshold"][1:]
