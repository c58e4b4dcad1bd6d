"""`ibstream record --from-bus nats://HOST:4222 --to DIR`: the tick store's recorder as its
own process, on any host, consuming the bus durably (ibstream/bus/recorder.py). It runs
until Ctrl-C / SIGTERM, then writes and acknowledges what it read; killed, it resumes where
it stopped on its next start (same `--durable` name)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from ibstream.cli.args import positive
from ibstream.cli.bus_options import nats_url

HELP = "record every stream on the bus into a tick store (durably: a restart resumes)"
log = logging.getLogger("ibstream.record")


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


def main(args: argparse.Namespace) -> int:
    from ibstream.errors import StreamError

    try:
        return asyncio.run(_record(args))
    except StreamError as exc:  # the store cannot be written
        sys.stderr.write(f"ibstream record: {exc.message}\n")
        return 1


async def _record(args: argparse.Namespace) -> int:
    from ibstream.bus.record_source import Stopped
    from ibstream.bus.recorder import BusRecorder

    recorder = BusRecorder(
        args.from_bus, args.to, durable=args.durable, flush_seconds=args.record_flush
    )
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
    log.info("stopped: %s", recorder.status())
    return 0
