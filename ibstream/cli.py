"""The `ibstream` console script: gateway, serve, demo, delta."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys

from ibstream.server.settings import ServerSettings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ibstream", description=__doc__)
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    gw = sub.add_parser("gateway", help="run the TWS API gateway simulator")
    gw.add_argument("--host", default="127.0.0.1")
    gw.add_argument("--port", type=int, default=4002)
    gw.add_argument("--seed", type=int, default=0)
    gw.add_argument(
        "--rate", type=float, default=20.0, help="market events per second per contract"
    )

    serve = sub.add_parser("serve", help="run the streaming server next to TWS / IB Gateway")
    defaults = ServerSettings()
    serve.add_argument(
        "--host", default=defaults.host, help="bind address (default: loopback only)"
    )
    serve.add_argument("--port", type=int, default=defaults.port)
    serve.add_argument("--ib-host", default=defaults.ib_host)
    serve.add_argument("--ib-port", type=int, default=defaults.ib_port)
    serve.add_argument("--client-id", type=int, default=defaults.client_id)
    serve.add_argument(
        "--ib-lib",
        choices=("ib_insync", "ib_async"),
        default=None,
        help="client library (default ib_insync, or $IBSTREAM_IB_LIB)",
    )
    serve.add_argument(
        "--demo", action="store_true", help="start the gateway simulator and connect to it"
    )
    serve.add_argument(
        "--max-connections-per-ip", type=int, default=defaults.max_connections_per_ip
    )
    serve.add_argument(
        "--max-streams-per-connection", type=int, default=defaults.max_streams_per_connection
    )
    serve.add_argument(
        "--channel-grace",
        type=_seconds,
        default=defaults.channel_grace_seconds,
        metavar="SECONDS",
        help="keep an upstream stream and its resume buffer this long after its last client "
        "leaves, so a client that reconnects resumes without a gap "
        f"(default {defaults.channel_grace_seconds:g}; 0: cancel at once)",
    )

    demo = sub.add_parser("demo", help="simulator + server + live delta summary in the terminal")
    demo.add_argument("--seconds", type=float, default=20.0)
    demo.add_argument("--contract", default="ES")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--json", action="store_true", help="end with one JSON summary line")
    demo.add_argument("--quiet", action="store_true", help="no line per trade, only the summary")

    from ibstream import study

    study.add_parser(sub)
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def serve_settings(args: argparse.Namespace) -> ServerSettings:
    """The `serve` command's options as server settings."""
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
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    if args.command in ("gateway", "serve"):
        level = min(level, logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        return _demo(args)
    if args.command == "delta":
        from ibstream import study

        try:
            return study.main(args)
        except KeyboardInterrupt:  # before the study took over Ctrl-C
            return 130
    with contextlib.suppress(KeyboardInterrupt):
        if args.command == "gateway":
            from ibstream.gateway.server import run_gateway

            asyncio.run(run_gateway(args.host, args.port, args.seed, args.rate))
        else:
            from ibstream.server.run import run_forever

            asyncio.run(run_forever(serve_settings(args), demo=args.demo))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from ibstream.demo import run_demo

    if args.seconds <= 0:
        sys.stderr.write("ibstream demo: --seconds must be positive\n")
        return 2
    try:
        asyncio.run(
            run_demo(
                sys.stdout,
                seconds=args.seconds,
                contract=args.contract,
                seed=args.seed,
                as_json=args.json,
                quiet=args.quiet,
            )
        )
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `ibstream demo | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
