"""Reading a recording: `ibstream.store.open(DIR).ticks()` is the tick frame `collect` builds
from the same ticks; filters prune by path and push the time filter down; DuckDB, Polars and
pyarrow read the same rows; a corrupt part is skipped with a warning naming it; bad input
is one clear error with a code."""

from __future__ import annotations

import warnings

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import ibstream.store
from ibstream import analytics
from ibstream.client.frames import empty_ticks
from ibstream.store import StoreError, layout, parts
from tests.store_data import BTC, ES, record


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, pd.DataFrame]:
    folder = tmp_path_factory.mktemp("store") / "rec"
    return str(folder), record(folder)


def by_id(contracts: list[dict]) -> list[dict]:
    return sorted(contracts, key=lambda c: c["contract_id"])


def test_ticks_are_the_frame_collect_builds(recorded):
    folder, expected = recorded
    got = ibstream.store.open(folder).ticks()
    pd.testing.assert_frame_equal(got, expected)
    assert by_id(got.attrs["contracts"]) == by_id(expected.attrs["contracts"])
    assert got.index.is_monotonic_increasing and got["ib_time"].notna().all()


@pytest.mark.parametrize("spec", ["ES", "esu4", ES.contract_id, str(ES.contract_id), ["ES"]])
def test_a_contract_by_symbol_local_symbol_or_conid(recorded, spec):
    folder, expected = recorded
    got = ibstream.store.open(folder).ticks(spec)
    pd.testing.assert_frame_equal(got, expected[expected.contract_id == ES.contract_id])
    assert got.attrs["contracts"] == [ES.to_dict()]


def test_tick_types_and_a_time_window(recorded):
    folder, expected = recorded
    start, end = "2024-07-01 23:59:30", pd.Timestamp("2024-07-02 00:00:30", tz="UTC")
    got = ibstream.store.open(folder).ticks([ES.symbol, BTC.contract_id], "Last", start, end)
    want = expected[(expected.tick_type == "last") & (expected.index >= start)]
    pd.testing.assert_frame_equal(got, want[want.index < end])
    assert len(got) > 0 and got.index.normalize().nunique() == 2  # across the date partitions


def test_trades_are_classified_as_the_analytics_do(recorded):
    folder, expected = recorded
    store = ibstream.store.open(folder)
    pd.testing.assert_frame_equal(
        store.trades("ES", method="tick"),
        analytics.classify(expected[expected.contract_id == ES.contract_id], "tick"),
    )


def test_sessions_contracts_and_sql_views(recorded):
    folder, expected = recorded
    store = ibstream.store.open(folder)
    sessions = store.sessions()
    days = expected.groupby([expected.index.strftime("%Y-%m-%d"), "contract_id"])
    assert sessions.set_index(["date", "contract_id"])["ticks"].to_dict() == days.size().to_dict()
    es_day = sessions[(sessions.contract_id == ES.contract_id) & (sessions.date == "2024-07-02")]
    es = expected[(expected.contract_id == ES.contract_id) & (expected.index >= "2024-07-02")]
    assert es_day["ticks_last"].item() == (es.tick_type == "last").sum()
    assert es_day["last_tick"].item() == es.index[-1] and es_day["first_tick"].item() == es.index[0]
    assert store.contracts().set_index("symbol").loc["ES", "local_symbol"] == "ESU4"
    counts = store.sql(
        "SELECT (SELECT count(*) FROM quotes) q, (SELECT count(*) FROM trades_raw) t, "
        "(SELECT count(*) FROM ticks) n, (SELECT count(*) FROM gaps) g"
    ).iloc[0]
    assert (counts.q, counts.t, counts.n, counts.g) == (
        (expected.tick_type == "bid_ask").sum(),
        (expected.tick_type == "last").sum(),
        len(expected),
        0,
    )


def test_duckdb_polars_and_pyarrow_read_the_same_rows(recorded):
    folder, expected = recorded
    keys = ["contract_id", "tick_type", "sequence"]
    columns = ["time", *keys, "price", "size", "bid_price", "ask_size", "exchange", "date"]

    def tidy(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame[columns].astype({"tick_type": str, "date": str, "exchange": object})
        frame["time"] = pd.to_datetime(frame["time"], utc=True).astype("int64")
        return frame.sort_values(keys).reset_index(drop=True)

    con = ibstream.store.duckdb(folder)
    duck = tidy(con.sql("SELECT * FROM ticks").to_arrow_table().to_pandas())
    glob = f"{folder}/ticks/**/*.parquet"
    polars = tidy(pl.scan_parquet(glob, hive_partitioning=True).collect().to_pandas())
    arrow = tidy(layout.ticks_dataset(layout.open_root(folder)).to_table().to_pandas())
    assert len(duck) == len(expected)
    pd.testing.assert_frame_equal(duck, arrow)
    pd.testing.assert_frame_equal(polars, arrow)


def test_a_corrupt_part_is_skipped_with_a_warning_naming_it(tmp_path):
    expected = record(tmp_path, flush=500)
    found = sorted((tmp_path / "ticks").rglob("*.parquet"))
    btc = [p for p in found if f"contract_id={BTC.contract_id}" in str(p)]
    truncated, garbage = btc[0], btc[1]  # older BTC parts: the newest describes the contract
    kind = truncated.parent.name.split("=")[1]
    assert garbage.parent.name == truncated.parent.name
    lost = pd.concat([pd.read_parquet(truncated), pd.read_parquet(garbage)]).sequence
    truncated.write_bytes(truncated.read_bytes()[:-100])
    garbage.write_bytes(b"not parquet at all " * 50)
    store = ibstream.store.open(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(store.ticks("ES")) == (expected.contract_id == ES.contract_id).sum()  # pruned
    with pytest.warns(ibstream.store.CorruptPartWarning) as caught:
        got = store.ticks()
    named = " ".join(str(w.message) for w in caught)
    assert str(truncated) in named and str(garbage) in named
    gone = (
        (expected.contract_id == BTC.contract_id)
        & (expected.tick_type == kind)
        & expected.sequence.isin(lost)
    )
    assert gone.sum() == len(lost) > 0
    pd.testing.assert_frame_equal(got, expected[~gone])
    fresh = ibstream.store.open(tmp_path)
    with pytest.warns(ibstream.store.CorruptPartWarning):
        assert fresh.sql("SELECT count(*) n FROM ticks").n.item() == len(got)
    assert fresh.sessions().ticks.sum() == len(got)


def test_gaps_are_read_by_contract_and_time(tmp_path):
    record(tmp_path, contracts=(ES,))
    t0 = pd.Timestamp("2024-07-02 00:00:10", tz="UTC").value
    rows = [
        {
            "contract_id": ES.contract_id,
            "tick_type": "last",
            "start": t0,
            "end": t0 + 10**9,
            "reason": "server_restarted",
            "server_id": "s0",
            "after_sequence": 7,
            "status": "open",
            "message": "m",
        },
    ]
    table = pa.Table.from_pylist(rows, schema=layout.GAP_SCHEMA)
    root = layout.open_root(tmp_path)
    parts.write_table(root, root.path(layout.gap_dir("2024-07-02"), "g.parquet"), table)
    store = ibstream.store.open(tmp_path)
    gaps = store.gaps("ES", start="2024-07-02")
    assert gaps.reason.tolist() == ["server_restarted"] and gaps.start[0].value == t0
    assert store.gaps(end="2024-07-02").empty
    assert store.sql("SELECT after_sequence FROM gaps").after_sequence.tolist() == [7]


def test_bad_input_is_one_error_with_a_code(recorded, tmp_path):
    folder, _ = recorded
    (tmp_path / "file").write_text("x")
    cases = {
        "STORE_NOT_FOUND": lambda: ibstream.store.open(tmp_path / "missing"),
        "NOT_A_DIRECTORY": lambda: ibstream.store.open(tmp_path / "file"),
        "NOT_A_RECORDING": lambda: ibstream.store.open(tmp_path),
        "CONTRACT_NOT_FOUND": lambda: ibstream.store.open(folder).ticks("NQ"),
        "INVALID_RANGE": lambda: ibstream.store.open(folder).ticks(
            start="2024-07-02", end="2024-07-01"
        ),
        "INVALID_TICK_TYPE": lambda: ibstream.store.open(folder).ticks(tick_types="trades"),
        "INVALID_TIME": lambda: ibstream.store.open(folder).ticks(start="yesterday-ish"),
        "INVALID_QUERY": lambda: ibstream.store.open(folder).sql("SELECT nope FROM ticks"),
    }
    for code, call in cases.items():
        with pytest.raises(StoreError) as caught:
            call()
        assert caught.value.code == code and str(caught.value).startswith(code + ": ")
        assert "\n" not in str(caught.value), str(caught.value)
    with pytest.raises(StoreError, match="it holds BTC \\(BTCUSDT\\) 1347019244, ES \\(ESU4\\)"):
        ibstream.store.open(folder).ticks("NQ")


def test_an_empty_recording_reads_as_empty_frames(tmp_path):
    (tmp_path / "_state").mkdir()
    store = ibstream.store.open(tmp_path)
    pd.testing.assert_frame_equal(store.ticks(), empty_ticks())
    assert store.sessions().empty and store.gaps().empty
    assert store.sql("SELECT count(*) n FROM ticks").n.item() == 0
    assert str(store.sql("SELECT time FROM ticks").dtypes["time"]) == "datetime64[ns, UTC]"
