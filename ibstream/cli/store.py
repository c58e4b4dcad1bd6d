"""`ibstream store ls|show|compact DIR`: what a recording holds, one contract's day in
detail (ticks per tick type, first / last tick, gaps), and compaction of its small parts.
`--json` writes JSON lines, each with a `type` (session, stream, gap, compacted)."""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from ibstream.cli.args import HelpFormatter, day
from ibstream.cli.lines import json_line

HELP = "list, inspect and compact a recording (the tick store of `serve --record`)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="store_command", required=True, metavar="{ls,show,compact}")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text, formatter_class=HelpFormatter)
        p.add_argument("dir", metavar="DIR", help="the recording: a directory or s3:// URI")
        return p

    ls = command("ls", "what was recorded: ticks per contract and UTC day")
    show = command("show", "one contract: ticks per tick type, first / last tick, gaps")
    show.add_argument("contract", metavar="CONTRACT", help="symbol, local symbol or conId")
    show.add_argument("--date", type=day, metavar="YYYY-MM-DD", help="one UTC day (default: all)")
    compact = command("compact", "merge small parts: one file per partition and hour")
    for p in (ls, show, compact):
        p.add_argument("--json", action="store_true", help="JSON lines on stdout")


def main(args: argparse.Namespace) -> int:
    from ibstream.store import StoreError

    command = f"store {args.store_command}"
    try:
        run = {"ls": _ls, "show": _show, "compact": _compact}[args.store_command]
        return run(args)
    except StoreError as exc:
        return _problem(command, str(exc))
    except OSError as exc:  # an unreachable object store, a permission refused
        return _problem(command, f"cannot read {args.dir}: {exc}")


def _problem(command: str, line: str) -> int:
    sys.stderr.write(f"ibstream {command}: {line}\n")
    return 1


def _iso(stamp: pd.Timestamp) -> str:
    return stamp.isoformat()


def _ls(args: argparse.Namespace) -> int:
    import ibstream.store

    sessions = ibstream.store.open(args.dir).sessions()
    counts = [c for c in sessions.columns if c.startswith("ticks_")]
    for row in sessions.itertuples(index=False):
        if args.json:
            fields = {c: int(getattr(row, c)) for c in ("contract_id", "ticks", *counts)}
            print(
                json_line(
                    "session",
                    date=row.date,
                    symbol=row.symbol,
                    local_symbol=row.local_symbol,
                    **fields,
                    first_tick=_iso(row.first_tick),
                    last_tick=_iso(row.last_tick),
                )
            )
            continue
        kinds = ", ".join(f"{c[6:]} {getattr(row, c)}" for c in counts if getattr(row, c))
        print(
            f"{row.date}  {row.symbol or '?'} ({row.local_symbol or '-'}) {row.contract_id}  "
            f"{row.ticks} ticks ({kinds})  {row.first_tick:%H:%M:%S} - {row.last_tick:%H:%M:%S}"
        )
    if not args.json and sessions.empty:
        print(f"{args.dir}: no ticks recorded yet")
    return 0


def _show(args: argparse.Namespace) -> int:
    import ibstream.store
    from ibstream.store import catalog, summary

    store = ibstream.store.open(args.dir)
    ids = _ids(store, args.contract)
    start = None if args.date is None else pd.Timestamp(args.date, tz="UTC")
    end = None if start is None else start + pd.Timedelta(days=1)
    chosen = catalog.select(catalog.list_parts(store.root), ids, None, start and start.value)
    usable = store.validator.usable(chosen)
    stats = summary.part_stats(store, usable)
    if args.date is not None:
        stats = stats[stats.date == args.date.isoformat()]
    infos = store.contract_infos()
    streams = stats.groupby(["date", "contract_id", "tick_type"]).agg(
        ticks=("rows", "sum"), first=("first_ns", "min"), last=("last_ns", "max")
    )
    gaps = store.gaps(ids, start, end)
    for (date, contract_id, kind), row in streams.iterrows():
        info = infos.get(contract_id, {})
        first, last = pd.Timestamp(row["first"], tz="UTC"), pd.Timestamp(row["last"], tz="UTC")
        if args.json:
            print(
                json_line(
                    "stream",
                    date=date,
                    contract_id=int(contract_id),
                    symbol=info.get("symbol"),
                    local_symbol=info.get("local_symbol"),
                    tick_type=kind,
                    ticks=int(row["ticks"]),
                    first_tick=_iso(first),
                    last_tick=_iso(last),
                )
            )
        else:
            name = f"{info.get('symbol', '?')} ({info.get('local_symbol', '-')}) {contract_id}"
            print(
                f"{date}  {name}  {kind:<9} {row['ticks']:>9} ticks  "
                f"first {first:%H:%M:%S.%f}  last {last:%H:%M:%S.%f}"
            )
    for gap in gaps.itertuples(index=False):
        if args.json:
            print(json_line("gap", **_gap_fields(gap)))
        else:
            print(
                f"gap  {gap.contract_id} {gap.tick_type}  {gap.start:%Y-%m-%d %H:%M:%S.%f} - "
                f"{gap.end:%H:%M:%S.%f}  {gap.reason} ({gap.status}): {gap.message}"
            )
    if not args.json:
        if streams.empty:
            when = f" on {args.date}" if args.date else ""
            print(f"no ticks of {args.contract}{when} in {args.dir}")
        if gaps.empty:
            print("no gaps")
    return 0


def _ids(store: object, spec: str) -> list[int]:
    from ibstream.store.specs import resolve

    return resolve(spec, store.contract_infos(), store.root.uri) or []


def _gap_fields(gap: object) -> dict:
    fields = gap._asdict()
    fields["start"], fields["end"] = _iso(gap.start), _iso(gap.end)
    if pd.isna(fields.get("after_sequence")):
        fields["after_sequence"] = None
    return {k: (None if v is pd.NA else v) for k, v in fields.items()}


def _compact(args: argparse.Namespace) -> int:
    from ibstream.store import catalog, compact, layout

    root = layout.open_root(args.dir)
    catalog.check_root(root)
    report = compact.compact(root, progress=not args.json and sys.stderr.isatty())
    if report.busy:
        return _problem(
            "store compact",
            f"another compaction is running on {args.dir} (a recording server?); "
            "try again when it has finished",
        )
    if args.json:
        print(json_line("compacted", **report.to_dict()))
    else:
        print(
            f"compacted {report.hours} partition-hours ({report.parts_merged} parts, "
            f"{report.rows} ticks) in {args.dir}"
            + (f"; finished {report.recovered} interrupted compactions" if report.recovered else "")
            + (f"; left {len(report.corrupt)} corrupt parts in place" if report.corrupt else "")
        )
    return 0
