"""IB refuses part-way through a gap's pages: the gap is `partly_filled`, says from which IB
second what remains runs, and the ticks of the pages IB did send are stored once."""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path

import ibstream.store
from tests.client_fixtures import ServerProcess
from tests.conftest import get_json
from tests.test_backfill import recorded_market, stored_stream, stream_keys

CANCELLED = "Historical Market Data Service error message:API historical data query cancelled"
OPTIONS = ["--record-flush", "0.2", "--record-contract", "ES:all_last"]


async def test_a_refusal_after_the_first_page_leaves_the_gap_partly_filled(tmp_path: Path):
    store = tmp_path / "store"
    # 1,000 events/s: about 350 trades/s, so a 4 s outage is more than one page of trades
    async with recorded_market(41, rate=1000.0) as (gateway, truth, truth_id):
        server = ServerProcess(gateway.port)
        try:
            await server.start("--record", str(store), *OPTIONS)
            await server.wait_log("recording ES")
            await truth.until_second(int(time.time()) + 1)
            gateway.fail_next("historical_ticks", 162, CANCELLED, after=1)  # the second page
            gateway.refuse_connections(4.0)
            assert await gateway.drop_connections(keep={truth_id}) == 1
            (line,) = await server.wait_log("backfill: gap", "ib_disconnected", timeout=60)
            assert "partly_filled" in line, line
            _, health = await get_json(server, "/health")  # type: ignore[arg-type]
            assert health["recording"]["backfill"]["gaps"]["partly_filled"] == 1
            await truth.until_second(int(time.time()) + 1)
            assert await server.terminate() == 0
        finally:
            await server.kill()
    assert gateway.history_requests == 1  # the first page; the refused second is not counted
    (gap,) = ibstream.store.open(store).gaps().to_dict("records")
    assert gap["status"] == "partly_filled" and gap["revision"] == 1, gap
    found = re.search(
        r"up to IB second (\d+); IB second (\d+) to (\d+) remains: .*cancelled", gap["message"]
    )
    assert found is not None, gap["message"]
    reached, rest, hi = map(int, found.groups())
    assert rest == reached + 1 and hi > rest
    table = stored_stream(store, "all_last")
    keys = stream_keys(table, ["price", "size"])
    assert sum(1 for s in table["source"].to_pylist() if s == "historical") == gap["ticks_added"]
    assert gap["ticks_added"] > 0  # the first page's, less those stored live before the gap
    # up to where IB stopped: every trade once, against the ground truth
    first = keys[0][0] + 1
    mine = Counter(k for k in keys if first <= k[0] <= reached)
    expected = Counter(r[:3] for r in truth.window("TRADES", first, reached + 1))
    assert mine == expected, (mine - expected, expected - mine)
    # what remains is missing, and said to be: nothing stored in the seconds after it
    assert not [k for k in keys if rest <= k[0] < hi]
    assert truth.window("TRADES", rest, hi)
