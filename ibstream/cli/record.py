"""`ibstream record --from-bus nats://HOST:4222 --to DIR`: the tick store's recorder as its
own process, on any host, consuming the bus durably (ibstream/bus/recorder.py). It runs
until Ctrl-C / SIGTERM, then writes and acknowledges what it read; killed, it resumes where
it stopped on its next start (same `--durable` name). It answers `GET /health` on
`--health-host`:`--health-port` (default: loopback, a free port; its URL is logged at start)
unless `--health-port off`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from ibstream.cli.args import bind_error, port, positive
from ibstream.cli.bus_options import nats_url

HELP = "record every stream on the bus into a tick store (durably: a restart resumes)"
log = logging.getLogger("ibstream.record")


def health_port(text: str) -> int | None:
    """`--health-port`: a port (0: any free one), or `off` (None: no /health)."""
    if text.strip().lower() == "off":
        return None
    try:
        return port(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (or off)") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ibstream.bus.recorder import DEFAULT_DURABLE

    parser.add_argument(
        "--from-bus",
        required=True,
        type=nats_url,
        metavar="URL",
        help="the NATS server, e.g. nats://HOST:4222 (a cluster: its URLs, comma-separated)",
    )
    parser.add_argument(
        "--to", required=True, metavar="DIR", help="the tick store: a directory or s3:// URI"
    )
    parser.add_argument(
        "--durable",
        default=DEFAULT_DURABLE,
        metavar="NAME",
        help="the JetStream durable consumer's name: one per recording (a restart with the "
        "same name resumes it)",
    )
    parser.add_argument(
        "--record-flush",
        type=positive(float),
        default=1.0,
        metavar="S",
        help="seconds between writes; what was read is acknowledged once written",
    )
    parser.add_argument(
        "--health-port",
        type=health_port,
        default=0,
        metavar="PORT",
        help="serve GET /health here (200 ok, 503 degraded: NATS away, the store not "
        "writable); 0: a free port, its URL logged at start; off: no /health",
    )
    parser.add_argument(
        "--health-host",
        default="127.0.0.1",
        metavar="HOST",
        help="the /health bind address (loopback: this machine only)",
    )


def main(args: argparse.Namespace) -> int:
    from ibstream.errors import StreamError

    try:
        return asyncio.run(_record(args))
    except StreamError as exc:  # the store cannot be written
        return _problem(exc.message)
    except OSError as exc:  # /health cannot listen there (a busy port, an address not ours)
        if not bind_error(exc):
            raise
        where = f"{args.health_host}:{args.health_port}"
        return _problem(f"cannot serve /health on {where} ({exc.strerror}); pick another "
                        "--health-port / --health-host (0: a free port; off: none)")  # fmt: skip


def _problem(line: str) -> int:
    sys.stderr.write(f"ibstream record: {line}\n")
    return 1


async def _record(args: argparse.Namespace) -> int:
    from ibstream.bus.record_source import Stopped
    from ibstream.bus.recorder import BusRecorder

    recorder = BusRecorder(
        args.from_bus, args.to, durable=args.durable, flush_seconds=args.record_flush
    )
    await recorder.open_store()  # a store that cannot be written: one line, nothing started
    health = None
    if args.health_port is not None:  # then: it answers while the bus is still awaited
        from ibstream.bus.record_health import RecorderHealth

        health = await RecorderHealth.start(recorder, args.health_host, args.health_port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, recorder.stopping.set)
    try:
        with contextlib.suppress(Stopped):  # stopped while still waiting for the bus
            await recorder.start()
            await recorder.run()
    finally:
        with contextlib.suppress(Exception):
            await recorder.stop()
        if health is not None:
            await health.stop()
    log.info("stopped: %s", recorder.status())
    return 0
