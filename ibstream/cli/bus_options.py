"""`ibstream serve` options of the source role: `--bus nats://HOST:4222` and the JetStream
stream's retention (see `ibstream.bus`)."""

from __future__ import annotations

import argparse

from ibstream.cli.args import positive
from ibstream.server.settings import ServerSettings


def nats_url(text: str) -> str:
    """A NATS server URL (nats://, tls://; several comma-separated for a cluster)."""
    urls = [u.strip() for u in text.split(",")]
    for url in urls:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in ("nats", "tls") or not rest:
            raise argparse.ArgumentTypeError(
                f"expected a URL such as nats://HOST:4222, got {url!r}"
            )
    return ",".join(urls)


def add_source_options(serve: argparse.ArgumentParser) -> None:
    d = ServerSettings()
    serve.add_argument(
        "--bus",
        type=nats_url,
        default=None,
        metavar="URL",
        help="publish every tick and source event to this NATS JetStream server "
        "(nats://HOST:4222), and answer edges' control requests there (default: none)",
    )
    serve.add_argument(
        "--bus-max-age",
        type=positive(float),
        default=d.bus_max_age,
        metavar="SECONDS",
        help="with --bus: how long the bus keeps a tick",
    )
    serve.add_argument(
        "--bus-max-bytes",
        type=positive(int),
        default=d.bus_max_bytes,
        metavar="BYTES",
        help="with --bus: the bus stream's size bound, oldest ticks go first (default: unlimited)",
    )
    serve.add_argument(
        "--bus-replicas",
        type=positive(int),
        default=d.bus_replicas,
        metavar="N",
        help="with --bus: copies of the stream in a NATS cluster (1, 3 or 5)",
    )
    serve.add_argument(
        "--bus-buffer",
        type=positive(int),
        default=d.bus_buffer,
        metavar="N",
        help="with --bus: messages kept while NATS is away; beyond it the oldest are dropped, "
        "counted in /health and named in a bus_overflow event",
    )


def source_settings(args: argparse.Namespace) -> dict:
    """The bus options as ServerSettings keywords."""
    return {
        "bus": args.bus,
        "bus_max_age": args.bus_max_age,
        "bus_max_bytes": args.bus_max_bytes,
        "bus_replicas": args.bus_replicas,
        "bus_buffer": args.bus_buffer,
    }
