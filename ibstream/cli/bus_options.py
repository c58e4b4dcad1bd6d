"""`ibstream serve` options of the bus roles: the source's `--bus nats://HOST:4222` and the
JetStream stream's retention, an edge's `--from-bus nats://HOST:4222` and its holds and
catch-up (see `ibstream.bus`)."""

from __future__ import annotations

import argparse

from ibstream.cli.args import positive, seconds
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
        "ticks kept while NATS is away; beyond it the oldest are dropped, counted in "
        "/health and named in a bus_overflow event",
    ),
)


# the same for an edge (--from-bus)
_FROM_BUS = (
    (
        "--bus-lease",
        positive(float),
        "bus_lease",
        "SECONDS",
        "an edge's hold on a stream at the source lasts this long unless renewed, so the "
        "streams of an edge that died are freed",
    ),
    (
        "--bus-catch-up",
        seconds,
        "bus_catch_up",
        "SECONDS",
        "at start read this much of the source's current run from the bus (its resume "
        "buffers), or all of it if the run is younger",
    ),
)


def add_edge_options(serve: argparse.ArgumentParser) -> None:
    d = ServerSettings()
    serve.add_argument(
        "--from-bus",
        type=nats_url,
        default=None,
        metavar="URL",
        help="run as an edge server: no IB connection, every stream comes from the source's "
        "ticks on this NATS JetStream bus (a source runs `ibstream serve --bus URL`), e.g. "
        "nats://HOST:4222 (default: none, connect to IB)",
    )
    _add(serve, _FROM_BUS, d, "with --from-bus")


class _RoleOption(argparse.Action):
    """Stores the value and notes the flag as given, so one without its role is refused."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        namespace.bus_given = [*getattr(namespace, "bus_given", ()), option_string]


def _add(serve: argparse.ArgumentParser, table: tuple, d: ServerSettings, role: str) -> None:
    for flag, kind, name, metavar, text in table:
        serve.add_argument(
            flag,
            type=kind,
            default=getattr(d, name),
            metavar=metavar,
            action=_RoleOption,
            help=f"{role}: {text}",
        )


def misplaced(args: argparse.Namespace) -> str | None:
    """A role's option given without the role (it would do nothing), said in one line."""
    given = getattr(args, "bus_given", ())
    for table, role, present in (
        (_WITH_BUS, "--bus", args.bus),
        (_FROM_BUS, "--from-bus", args.from_bus),
    ):
        flags = [flag for flag, *_ in table if flag in given]
        if flags and not present:
            what = "the source publishing to the bus" if role == "--bus" else "an edge"
            verb = "apply" if len(flags) > 1 else "applies"
            return f"{', '.join(flags)} only {verb} with {role} URL ({what})"
    return None


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
    _add(serve, _WITH_BUS, d, "with --bus")


def bus_settings(args: argparse.Namespace) -> dict:
    """Both roles' options as ServerSettings keywords."""
    names = [name for _, _, name, _, _ in _WITH_BUS + _FROM_BUS]
    return {"bus": args.bus, "from_bus": args.from_bus, **{n: getattr(args, n) for n in names}}
