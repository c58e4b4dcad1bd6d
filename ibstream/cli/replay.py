"""`ibstream replay DIR`: serve a recording over the live SSE and WebSocket API.

Every client, notebook and the dashboard work against it unchanged: contract lookup by
symbol, subscribe, resume, limits, batched frames, `/health` and `/v2/schema` behave as on
a live server. Each subscribe replays from `--start` (or its own `start`) on its own clock;
each stream ends with `info` and `complete`, both `replay_completed`. Nothing is written.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from ibstream.cli.args import port, positive
from ibstream.errors import StreamError
from ibstream.protocol.times import iso_ns, parse_time_ns

HELP = "serve a recording over the live SSE and WebSocket API"


def speed(text: str) -> float | None:
    """`max` (None: as fast as each client reads) or a number above 0 (1: as recorded)."""
    if text.strip().lower() == "max":
        return None
    try:
        return positive(float)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a number above 0 or 'max', got {text!r}"
        ) from None


def moment(text: str) -> int:
    try:
        return parse_time_ns(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `replay` subcommand's options (the console script calls `main(args)`)."""
    p.add_argument(
        "dir", metavar="DIR", help="the recording: a directory (or s3:// URI) `--record` wrote"
    )
    p.add_argument(
        "--speed",
        type=speed,
        default=1.0,
        help="10: ten times the recorded pace; max: as fast as each client reads",
    )
    p.add_argument(
        "--start",
        type=moment,
        metavar="T",
        help="replay from this time, ISO-8601 (UTC unless an offset is given) or epoch ns "
        "(default: the first recorded tick)",
    )
    p.add_argument(
        "--end", type=moment, metavar="T", help="replay up to this time (default: the last tick)"
    )
    p.add_argument(
        "--contract",
        action="append",
        default=[],
        metavar="SPEC",
        help="serve only this contract (symbol or conId); repeatable (default: every recorded one)",
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (loopback: this machine only)")
    p.add_argument("--port", type=port, default=8001, help="HTTP / WebSocket port (0: any)")
    p.add_argument("--loop", action="store_true", help="start over after the end, for ever")
    p.add_argument(
        "--token",
        default=None,
        help="shared secret clients must send; required off loopback (default: $IBSTREAM_TOKEN)",
    )
    p.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a browser page origin allowed to open streams; repeatable (default: none)",
    )


def main(args: argparse.Namespace) -> int:
    """Check everything, then serve until SIGINT / SIGTERM; one line on stderr otherwise."""
    from ibstream.protocol.auth import token_from_env
    from ibstream.server.guard import bind_problem
    from ibstream.server.probe import listen_problem
    from ibstream.server.run import serve_until_signal, start_replay_server
    from ibstream.server.settings import ServerSettings
    from ibstream.store.replay import Recording, RecordingError, ReplayHub

    if args.start is not None and args.end is not None and args.start >= args.end:
        return _problem(f"--start {iso_ns(args.start)} is not before --end {iso_ns(args.end)}")
    try:
        recording = Recording.open(args.dir)
        if args.contract:
            recording = recording.only(args.contract)
    except RecordingError as exc:
        return _problem(str(exc))
    except StreamError as exc:
        return _problem(f"--contract: {exc.message}")
    if not recording.has_ticks(args.start, args.end):
        return _problem(f"no recorded ticks in that window; {args.dir} spans {recording.span()}")
    hub = ReplayHub(
        recording, speed=args.speed, start_ns=args.start, end_ns=args.end, loop=args.loop
    )
    settings = ServerSettings(
        host=args.host,
        port=args.port,
        token=args.token or token_from_env(),
        allowed_origins=tuple(args.allow_origin),
    )
    problem = bind_problem(settings.host, settings.token) or listen_problem(args.host, args.port)
    if problem:
        return _problem(problem)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_until_signal(lambda: start_replay_server(settings, hub)))
    except (StreamError, OSError) as exc:
        return _problem(getattr(exc, "message", None) or str(exc))
    return 0


def _problem(line: str) -> int:
    sys.stderr.write(f"ibstream replay: {line}\n")
    return 1
