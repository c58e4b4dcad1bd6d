"""The `ibstream` console script: gateway, serve, demo, delta, store, replay, history.

A problem a user can fix (a busy port, a bad option, a refused bind) ends the command with one
line on stderr saying what to do and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import socket
import sys
from importlib import metadata

from ibstream.cli import bus_options
from ibstream.cli.args import (
    HelpFormatter,
    Parser,
    bind_error,
    clock,
    day,
    ib_port,
    port,
    positive,
    record_spec,
    seconds,
)
from ibstream.errors import StreamError
from ibstream.server.settings import ServerSettings

EXIT_PROBLEM = 1  # the command could not run as asked: the stderr line says why
# Below -vv: loggers that repeat every failed IB connect attempt (ib_insync even at ERROR;
# the server says it once) or every HTTP request of a probe.
_CHATTY_LOGGERS = {
    "ib_insync.client": logging.CRITICAL,
    "ib_async.client": logging.CRITICAL,
    "ibstream.ib.source": logging.WARNING,
    "httpx": logging.WARNING,
}
# The demo's own server reports IB's errors to it (as `error` lines); the library's log
# line of the same error would only repeat it.
_DEMO_CHATTY = ("ib_insync.wrapper", "ib_async.wrapper")


def package_version() -> str:
    """The installed distribution's version (the package's own when run from a checkout)."""
    try:
        return metadata.version("ibstream")
    except metadata.PackageNotFoundError:
        from ibstream import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="ibstream", description=__doc__.split("\n")[0], formatter_class=HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"ibstream {package_version()}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, formatter_class=HelpFormatter)

    gw = command("gateway", "run the TWS API gateway simulator")
    gw.add_argument("--host", default="127.0.0.1", help="bind address")
    gw.add_argument("--port", type=port, default=4002, help="TWS API port to listen on (0: any)")
    gw.add_argument("--seed", type=int, default=0, help="random seed of the simulated market")
    gw.add_argument(
        "--rate", type=positive(float), default=20.0, help="market events/s per contract"
    )
    gw.add_argument(
        "--replay",
        metavar="DIR",
        help="play a recording (`ibstream serve --record DIR`) instead of the synthetic market: "
        "its contracts, its ticks at their recorded spacing, on its first day unless "
        "--session-date (default: the synthetic market)",
    )
    gw.add_argument(
        "--speed",
        type=positive(float),
        default=None,
        help="with --replay: how many times as fast as recorded (default: 1)",
    )
    gw.add_argument(
        "--loop", action="store_true", help="with --replay: start over after the last tick"
    )

    _add_serve(command("serve", "run the streaming server next to TWS / IB Gateway"))

    from ibstream.cli import delta as study
    from ibstream.cli import demo

    demo.add_arguments(command("demo", demo.HELP))
    for name in ("gateway", "serve", "demo"):
        sub.choices[name].add_argument(
            "--session-date",
            type=day,
            metavar="YYYY-MM-DD",
            help="the simulator's trading day: which futures have expired, the front month "
            "(default: $IBSTREAM_SESSION_DATE, else today)",
        )
    study.add_arguments(command("delta", study.HELP))
    from ibstream.cli import store

    store.add_arguments(command("store", store.HELP))
    from ibstream.cli import replay

    replay.add_arguments(command("replay", replay.HELP))
    from ibstream.cli import history

    history.add_arguments(command("history", history.HELP))
    from ibstream.cli import record

    record.add_arguments(command("record", record.HELP))
    return parser


def _add_serve(serve: argparse.ArgumentParser) -> None:
    d = ServerSettings()
    serve.add_argument("--host", default=d.host, help="bind address (loopback: this machine only)")
    serve.add_argument("--port", type=port, default=d.port, help="HTTP / WebSocket port (0: any)")
    serve.add_argument("--ib-host", default=d.ib_host, help="TWS / IB Gateway host")
    serve.add_argument(
        "--ib-port", type=ib_port, default=d.ib_port, help="TWS / IB Gateway API port"
    )
    serve.add_argument("--client-id", type=int, default=d.client_id, help="IB API client id")
    serve.add_argument(
        "--ib-lib",
        choices=("ib_insync", "ib_async"),
        default=None,
        help="client library (default: $IBSTREAM_IB_LIB, else ib_insync)",
    )
    serve.add_argument(
        "--demo", action="store_true", help="start the gateway simulator and connect to it"
    )
    serve.add_argument(
        "--token",
        default=None,
        help="shared secret clients must send; required off loopback (default: $IBSTREAM_TOKEN; "
        "prefer the variable: a command line is visible to other users in `ps`)",
    )
    serve.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a browser page origin (scheme://host[:port]) allowed to open streams; repeatable "
        "(default: none; clients without an Origin header always pass)",
    )
    serve.add_argument(
        "--max-connections-per-ip",
        type=positive(int),
        default=d.max_connections_per_ip,
        help="open WebSocket / SSE connections one client IP may hold",
    )
    serve.add_argument(
        "--max-streams-per-connection",
        type=positive(int),
        default=d.max_streams_per_connection,
        help="streams one connection may subscribe",
    )
    serve.add_argument(
        "--channel-grace",
        type=seconds,
        default=d.channel_grace_seconds,
        metavar="SECONDS",
        help="keep an upstream stream and its resume buffer this long after its last client "
        "leaves, so a client that reconnects resumes without a gap (0: cancel at once)",
    )
    bus_options.add_edge_options(serve)
    serve.add_argument(
        "--record",
        metavar="DIR",
        default=None,
        help="record every stream the server holds into this tick store (a directory or "
        "s3://bucket/prefix): hive-partitioned Parquet, read with `ibstream.store.open(DIR)` (default: none, nothing is recorded)",
    )
    serve.add_argument(
        "--record-flush",
        type=positive(float),
        default=d.record_flush,
        metavar="SECONDS",
        help="write the recording at least this often (a crash loses at most this much)",
    )
    serve.add_argument(
        "--record-contract",
        action="append",
        default=[],
        type=record_spec,
        metavar="SPEC",
        help="keep this stream open and recorded from start-up, whether or not a client "
        "watches it: a symbol or conId, optionally :tick_type,tick_type (bid_ask,last if not "
        "given), e.g. ES or 265598:last; repeatable; needs --record (default: none)",
    )
    serve.add_argument(
        "--backfill",
        action=argparse.BooleanOptionalAction,
        default=d.backfill,
        help="with --record: fill the store's gaps (server restarts, IB outages) from IB's "
        "historical ticks, paced, beside live streaming",
    )
    serve.add_argument(
        "--backfill-from",
        type=clock,
        default=None,
        metavar="HH:MM",
        help="with --record-contract: also fill each kept stream's day from HH:MM (in the "
        "exchange's time zone from IB's contract details, else UTC) up to when it first "
        "started that day, once a day (default: none)",
    )
    bus_options.add_source_options(serve)


def serve_settings(args: argparse.Namespace) -> ServerSettings:
    """The `serve` command's options as server settings (the token from the environment
    when not given)."""
    from ibstream.protocol.auth import token_from_env

    return ServerSettings(
        host=args.host,
        port=args.port,
        ib_host=args.ib_host,
        ib_port=args.ib_port,
        client_id=args.client_id,
        ib_lib=args.ib_lib,
        max_connections_per_ip=args.max_connections_per_ip,
        max_streams_per_connection=args.max_streams_per_connection,
        channel_grace_seconds=args.channel_grace,
        token=args.token or token_from_env(),
        allowed_origins=tuple(args.allow_origin),
        record=args.record,
        record_flush=args.record_flush,
        record_contracts=tuple(args.record_contract),
        backfill=args.backfill,
        backfill_from=args.backfill_from,
        **bus_options.bus_settings(args),
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args)
    if getattr(args, "session_date", None):  # the variable every simulator of this process reads
        from ibstream.gateway.contracts import SESSION_DATE_ENV

        os.environ[SESSION_DATE_ENV] = args.session_date.isoformat()
    if args.command == "demo":
        from ibstream.cli import demo

        return demo.main(args)
    if args.command == "store":
        from ibstream.cli import store

        return store.main(args)
    if args.command == "replay":
        from ibstream.cli import replay

        return replay.main(args)
    if args.command == "history":
        from ibstream.cli import history

        return history.main(args)
    if args.command == "record":
        from ibstream.cli import record

        return record.main(args)
    if args.command == "delta":
        from ibstream.cli import delta as study

        try:
            return study.main(args)
        except KeyboardInterrupt:  # before the study took over Ctrl-C
            return 130
    try:
        with contextlib.suppress(KeyboardInterrupt):
            return _gateway(args) if args.command == "gateway" else _serve(args)
    except StreamError as exc:  # e.g. a bind off loopback without a token
        return _problem(args.command, exc.message)
    except OSError as exc:
        if not bind_error(exc):
            raise  # not the user's to fix: a real bug keeps its traceback
        return _problem(args.command, _bind_problem(args, exc))
    return 0


def _configure_logging(args: argparse.Namespace) -> None:
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    if args.command in ("gateway", "serve", "replay", "record"):
        level = min(level, logging.INFO)  # "listening on" / "serving on" lines
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.verbose < 2:
        for name, quiet in _CHATTY_LOGGERS.items():
            logging.getLogger(name).setLevel(quiet)
        if args.command == "demo":
            for name in _DEMO_CHATTY:
                logging.getLogger(name).setLevel(logging.CRITICAL)


def _problem(command: str, line: str) -> int:
    sys.stderr.write(f"ibstream {command}: {line}\n")
    return EXIT_PROBLEM


def _bind_problem(args: argparse.Namespace, exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve --host {args.host!r} ({exc.strerror}); use an IP address"
    if exc.errno != errno.EADDRINUSE:
        return f"cannot listen on {args.host}:{args.port} ({exc.strerror}); check --host / --port"
    if args.command == "gateway":
        holder = "TWS / IB Gateway or another simulator?"
    else:
        holder = f"another ibstream server? `server/run_server.py status --port {args.port}`"
    return f"port {args.port} is in use (by {holder}); pick another with --port"


def _gateway(args: argparse.Namespace) -> int:
    from ibstream.gateway.recorded import NotARecording, load_recording
    from ibstream.gateway.server import run_gateway

    replay = None
    if args.replay is None and (args.speed is not None or args.loop):
        return _problem("gateway", "--speed and --loop apply to a replay: add --replay DIR")
    if args.replay is not None:
        try:
            replay = load_recording(args.replay, speed=args.speed or 1.0, loop=args.loop)
        except NotARecording as exc:
            return _problem("gateway", f"--replay {exc}")
    session = args.session_date  # None: the recording's first day, else $IBSTREAM_SESSION_DATE
    asyncio.run(run_gateway(args.host, args.port, args.seed, args.rate, session, replay))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from ibstream.server.guard import bind_problem
    from ibstream.server.probe import health, listen_problem
    from ibstream.server.run import run_forever

    settings = serve_settings(args)
    if settings.record_contracts and not settings.record:
        return _problem("serve", "--record-contract needs --record DIR (where to record)")
    if settings.backfill_from is not None and not (settings.record_contracts and settings.backfill):
        return _problem(
            "serve",
            "--backfill-from fills the day before --record-contract streams started: it needs "
            "--record DIR, --record-contract SPEC and backfill on (not --no-backfill)",
        )
    if problem := bus_options.misplaced(args):
        return _problem("serve", problem)
    if settings.from_bus and (settings.record or args.demo or settings.bus):
        return _problem(
            "serve",
            "--from-bus runs an edge (no IB, no store, nothing published): leave out --record "
            "/ --demo / --bus; record from the bus with `ibstream record --from-bus URL --to DIR`",
        )
    if problem := bind_problem(settings.host, settings.token):  # before anything starts
        return _problem("serve", problem)
    problem = listen_problem(args.host, args.port)  # now, not after waiting seconds for IB
    if problem is not None:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(args.host, args.host)
        url = f"http://[{host}]:{args.port}" if ":" in host else f"http://{host}:{args.port}"
        if health(url, timeout=1.0) is not None:
            problem = (
                f"port {args.port} is in use by an ibstream server "
                f"(`server/run_server.py status --port {args.port}`); pick another with --port"
            )
        return _problem("serve", problem)
    if settings.from_bus:
        from ibstream.bus.serve import run_edge_forever

        asyncio.run(run_edge_forever(settings))
        return 0
    asyncio.run(run_forever(settings, demo=args.demo))
    return 0


if __name__ == "__main__":
    sys.exit(main())
