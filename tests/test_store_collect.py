"""End to end: a real server records what it streams from the simulator (`record=DIR`); the
recording read back with `ibstream.store.open(DIR).ticks()` holds exactly the frame
`Client.collect` built from the same streams (every column, dtype, order and contract)."""

from __future__ import annotations

import pandas as pd

import ibstream.store
from ibstream import Client
from tests.client_fixtures import threaded_server


def test_the_recording_holds_exactly_the_collected_frame(tmp_path):
    folder = tmp_path / "rec"
    with threaded_server(record=str(folder), record_flush=0.2) as server:
        with Client(server.url) as client:
            collected = client.collect(["ES", "AAPL"], limit=600, progress=False)
    stored = ibstream.store.open(folder).ticks(["ES", "AAPL"])
    keys = ["contract_id", "tick_type", "sequence"]
    mine = pd.MultiIndex.from_frame(stored[keys].astype({"tick_type": str}))
    theirs = pd.MultiIndex.from_frame(collected[keys].astype({"tick_type": str}))
    assert theirs.isin(mine).all()  # the stream kept recording after collect had its fill
    pd.testing.assert_frame_equal(stored[mine.isin(theirs)], collected)
    assert stored.attrs["contracts"] == collected.attrs["contracts"]  # in the order asked
