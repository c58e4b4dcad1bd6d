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


# (option, type, ServerSettings field, metavar, help): the stream's retention and the buffer
_WITH_BUS = (
    ("--bus-max-age", positive(float), "bus_max_age", "SECONDS", "how long the bus keeps a tick"),
    (
        "--bus-max-bytes",
        positive(int),
        "bus_max_bytes",
        "BYTES",
        "the bus stream's size bound, oldest ticks go first (default: unlimited)",
    ),
    (
        "--bus-replicas",
        positive(int),
        "bus_replicas",
        "N",
        "copies of the stream in a NATS cluster (1, 3 or 5)",
    ),
    (
        "--bus-buffer",
        positive(int),
        "bus_buffer",
        "N",
        "messages kept while NATS is away; beyond it the oldest are dropped, counted in "
        "/health and named in a bus_overflow event",
    ),
)


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
    for flag, kind, name, metavar, text in _WITH_BUS:
        serve.add_argument(
            flag, type=kind, default=getattr(d, name), metavar=metavar, help=f"with --bus: {text}"
        )


def source_settings(args: argparse.Namespace) -> dict:
    """The bus options as ServerSettings keywords."""
    return {"bus": args.bus, **{name: getattr(args, name) for _, _, name, _, _ in _WITH_BUS}}
