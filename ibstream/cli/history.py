"""`ibstream history CONTRACT --start T [--end T] --to FILE.parquet`: past ticks into a file.

The ticks come from a running server (`Client.history`: its store first, IB's history for
what the store lacks) and are written as the tick frame, which `pd.read_parquet` and
`ibstream.client.frames.conform_ticks` read back as it was. A progress bar goes to stderr
where a person watches, then one line saying what was written. Exit codes: 0 written and
complete; 3 written, but IB could not give a part (each missing part is a `warning:` line);
1 a server, contract or IB error (nothing written); 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from ibstream.client.history_args import HistoryQuery

HELP = "past ticks of one contract from a running server into a Parquet file"
EXIT_INCOMPLETE = 3


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `history` subcommand's options (the console script calls `main(args)`)."""
    p.add_argument("contract", help="conId or spec: ES, MNQ, AAPL, EUR.USD, SYMBOL:SECTYPE...")
    p.add_argument(
        "--start",
        required=True,
        metavar="T",
        help="from this time, ISO-8601 (UTC unless an offset is given) or epoch seconds / ns, "
        "or a duration before --end such as 30min or 2h (default: none, required)",
    )
    p.add_argument("--end", metavar="T", help="up to this time (default: now)")
    p.add_argument(
        "--to",
        required=True,
        metavar="FILE.parquet",
        help="the Parquet file to write (default: none, required)",
    )
    p.add_argument(
        "--tick-types",
        default="bid_ask,last",
        metavar="LIST",
        help="comma list of last, all_last, bid_ask, mid_point",
    )
    p.add_argument(
        "--server", help="server URL (default: $IBSTREAM_URL, else http://127.0.0.1:8001)"
    )
    p.add_argument(
        "--token", default=None, help="bearer token, if the server wants one (default: "
        "$IBSTREAM_TOKEN)",
    )  # fmt: skip


def main(args: argparse.Namespace, err: TextIO | None = None) -> int:
    from ibstream.client.history_args import check_query
    from ibstream.errors import StreamError

    err = err or sys.stderr
    types = [t.strip() for t in args.tick_types.split(",") if t.strip()]
    try:
        query = check_query(args.contract, types, args.start, args.end)
    except (TypeError, ValueError, StreamError) as exc:
        return _problem(err, _as_option(getattr(exc, "message", None) or str(exc)), 2)
    path = Path(args.to).expanduser()
    if path.is_dir() or not path.parent.is_dir():
        return _problem(err, f"--to {args.to}: not a file in an existing directory", 2)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            frame = asyncio.run(_fetch(args, query))
    except KeyboardInterrupt:
        return 130
    except StreamError as exc:
        return _problem(err, f"{exc.code}: {exc.message}", 1)
    try:
        frame.to_parquet(path)
    except OSError as exc:
        return _problem(err, f"cannot write {args.to}: {exc.strerror or exc}", 1)
    for warning in caught:
        err.write(f"ibstream history: warning: {warning.message}\n")
    info = frame.attrs.get("history", {})
    err.write(
        f"ibstream history: wrote {len(frame):,} ticks of {query.describe()} to {path} "
        f"({info.get('from_store', 0):,} from the store, {info.get('from_ib', 0):,} from IB "
        f"in {info.get('requests', 0)} requests)\n"
    )
    return EXIT_INCOMPLETE if info.get("missing") else 0


async def _fetch(args: argparse.Namespace, query: HistoryQuery) -> Any:
    from ibstream.client import AsyncClient
    from ibstream.server.launch import default_url

    client = AsyncClient(args.server or default_url(), token=args.token)
    try:  # the checked query's values: the same request again
        return await client.history(query.contract, query.tick_types, query.start_ns, query.end_ns)
    finally:
        await client.close()


def _as_option(message: str) -> str:
    """'start ...' -> '--start ...': the command's names for the arguments."""
    return re.sub(r"^(start|end|tick_types|contract)\b", _option, message)


def _option(found: re.Match) -> str:
    name = found[1]
    return name.upper() if name == "contract" else "--" + name.replace("_", "-")


def _problem(err: TextIO, line: str, code: int) -> int:
    err.write(f"ibstream history: {line}\n")
    return code
