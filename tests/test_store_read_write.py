"""Part files as `build_parts` + `write_part` write them (columns, nulls, encodings) and
their scan read back into the tick frame by `store.frame.frame_from_table`, equal to the
frame `collect` builds from the same ticks, in arrival order."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ibstream.client.frames import ticks_to_frame
from ibstream.model import ContractInfo, Tick, TickType
from ibstream.store import layout
from ibstream.store.frame import frame_from_table, frame_from_tables
from ibstream.store.parts import build_parts, write_part

ES = ContractInfo(637533641, "ES", "FUT", "CME", "USD", "ESZ6", 0.25, "E-mini", "20261218", "50")
AAPL = ContractInfo(265598, "AAPL", "STK", "SMART", "USD", "AAPL", 0.01, "APPLE INC")
HOUR = 3_600_000_000_000
T0 = 1_796_641_200_000_000_000 - 10_000_000  # ten milliseconds before an hour begins
COLUMNS = ["time", "sequence", "price", "size", "bid_price", "bid_size", "ask_price",
           "ask_size", "mid_price", "exchange", "conditions", "ib_time", "contract_id",
           "tick_type"]  # fmt: skip


def streams(n: int, seed: int = 3) -> dict[tuple[ContractInfo, str], list[Tick]]:
    """Ticks of two contracts and every tick type, interleaved in arrival order across an
    hour boundary; a few fields left out where IB may leave them out."""
    rng = random.Random(seed)
    out: dict[tuple[ContractInfo, str], list[Tick]] = {}
    for i in range(n):
        contract = ES if rng.random() < 0.6 else AAPL
        kind = rng.choice(list(TickType))
        stamp = T0 + i * 50_000 + rng.randrange(1_000)  # strictly increasing
        second = stamp // 10**9 if rng.random() < 0.9 else None
        price = round(5900 + rng.randrange(-40, 40) * 0.25, 2)
        if kind in (TickType.LAST, TickType.ALL_LAST):
            tick = Tick(contract.contract_id, kind, stamp, price=price, size=float(rng.randrange(1, 9)),
                        exchange=rng.choice(["CME", None]), conditions=rng.choice([None, "I"]),
                        ib_time=second)  # fmt: skip
        elif kind == TickType.BID_ASK:
            tick = Tick(contract.contract_id, kind, stamp, bid_price=price, bid_size=3.0,
                        ask_price=price + 0.25, ask_size=float(rng.randrange(1, 50)), ib_time=second)  # fmt: skip
        else:
            tick = Tick(contract.contract_id, kind, stamp, mid_price=price + 0.125, ib_time=second)
        out.setdefault((contract, kind.value), []).append(tick)
    return out


def record(store: object, ticks: dict[tuple[ContractInfo, str], list[Tick]]) -> layout.StoreRoot:
    root = layout.open_root(store)
    for (contract, tick_type), stream in ticks.items():
        sequences = list(range(1, len(stream) + 1))
        for part in build_parts(contract, tick_type, stream, sequences, "run-1"):
            write_part(root, part, "run-1", contract.to_dict())
    return root


def expected_frame(ticks: dict[tuple[ContractInfo, str], list[Tick]]) -> pd.DataFrame:
    """What `collect` would build from the same ticks: the wire rows in arrival order."""
    rows = [t.data(seq) for stream in ticks.values() for seq, t in enumerate(stream, 1)]
    return ticks_to_frame(sorted(rows, key=lambda row: row["recv_ns"]))


@pytest.mark.parametrize("dictionaries", [False, True])
def test_a_recording_reads_back_as_the_collected_frame(tmp_path, dictionaries):
    ticks = streams(3_000)
    root = record(tmp_path, ticks)
    scan = layout.ticks_dataset(root, dictionaries=dictionaries).to_table(columns=COLUMNS)
    assert len(layout.ticks_dataset(root).files) == 16  # 2 contracts x 4 types x 2 hours
    frame = frame_from_table(scan)
    pd.testing.assert_frame_equal(frame, expected_frame(ticks))


def test_rows_in_arrival_order_already_and_mixed_chunks_give_the_same_frame(tmp_path):
    ticks = streams(1_000, seed=5)
    scan = layout.ticks_dataset(record(tmp_path, ticks)).to_table(columns=COLUMNS)
    ordered = scan.take(np.argsort(scan.column("time").to_numpy(), kind="stable"))
    rechunked = pa.Table.from_batches(ordered.to_batches(max_chunksize=97))
    expected = expected_frame(ticks)
    pd.testing.assert_frame_equal(frame_from_table(rechunked), expected)
    pd.testing.assert_frame_equal(frame_from_table(scan.slice(0, 0)), expected.iloc[:0])


def test_tables_without_their_null_columns_and_run_end_encoded_give_the_same_frame(tmp_path):
    """As the reader hands a scan over: a table a run, columns all nulls left out, the
    partition keys run-end encoded (here text too, and runs of one row)."""
    scan = layout.ticks_dataset(record(tmp_path, streams(600, seed=7)), dictionaries=True)
    scan = scan.to_table(columns=COLUMNS)
    tables, start = [], 0
    for size in (1, 149, 1, 250, 199):
        table = scan.slice(start, size)
        start += size
        for name in table.column_names:
            column = table.column(name)
            if name != "time" and column.null_count == len(column):
                table = table.drop_columns([name])
            elif name in ("contract_id", "tick_type", "exchange", "sequence"):
                plain = column.cast(pa.string()) if name in ("tick_type", "exchange") else column
                encoded = pa.chunked_array([pc.run_end_encode(c) for c in plain.chunks])
                table = table.set_column(table.schema.get_field_index(name), name, encoded)
        tables.append(table)
    assert start == scan.num_rows
    kept = [t.to_pydict() for t in tables]
    pd.testing.assert_frame_equal(frame_from_tables(tables), frame_from_table(scan))
    # the frame lets go of the scan's buffers as it goes, never of a caller's tables
    assert [t.to_pydict() for t in tables] == kept


def test_an_unknown_tick_type_is_refused_by_name(tmp_path):
    scan = layout.ticks_dataset(record(tmp_path, streams(50))).to_table(columns=COLUMNS)
    bad = scan.set_column(
        COLUMNS.index("tick_type"), "tick_type", pa.array(["trades"] * scan.num_rows)
    )
    with pytest.raises(ValueError, match="tick_type holds \\['trades'\\]"):
        frame_from_table(bad)


def test_parts_keep_what_each_tick_type_carries_and_nulls_elsewhere(tmp_path):
    ticks = streams(400)
    root = record(tmp_path, ticks)
    for path in layout.ticks_dataset(root).files:
        table = pq.read_table(path)
        kind = path.split("tick_type=")[1].split("/")[0]
        carried = {
            "last": {"price", "size"},
            "all_last": {"price", "size"},
            "bid_ask": {"bid_price", "bid_size", "ask_price", "ask_size"},
            "mid_point": {"mid_price"},
        }[kind]
        for name in (
            "price",
            "size",
            "bid_price",
            "bid_size",
            "ask_price",
            "ask_size",
            "mid_price",
        ):
            nulls = table.column(name).null_count
            assert nulls == (0 if name in carried else table.num_rows), (path, name)
        if kind == "bid_ask":
            assert table.column("exchange").null_count == table.num_rows


def test_parts_use_the_encodings_that_read_fast(tmp_path):
    root = record(tmp_path, streams(400))
    meta = pq.ParquetFile(layout.ticks_dataset(root).files[0]).metadata
    encodings = {
        meta.schema.column(i).name: meta.row_group(0).column(i).encodings
        for i in range(meta.num_columns)
    }
    assert "DELTA_BINARY_PACKED" in encodings["time"]
    assert "DELTA_BINARY_PACKED" in encodings["sequence"]
    assert "RLE_DICTIONARY" in encodings["exchange"] or "RLE_DICTIONARY" in encodings["price"]
    assert meta.row_group(0).column(0).compression == "ZSTD"
