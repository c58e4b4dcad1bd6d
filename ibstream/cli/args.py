"""Argument parsing for the `ibstream` command: option value types and the help layout.

Every value is checked where it is parsed, so a bad one is one line naming the option and
what it takes (exit 2), before anything starts.
"""

from __future__ import annotations

import argparse
import errno
import socket
from collections.abc import Callable
from datetime import date, time
from typing import NoReturn


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends `(default: ...)` to every option that takes a value and does not say its
    default itself (`(required)` to a required one); flags (store_true, counts) have none to
    show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.nargs == 0 or "(default" in text or "required)" in text:
            return text
        if action.required and action.option_strings:
            return f"{text} (required)"
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """A bad option is one line on stderr (exit 2), not the whole usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def port(text: str, lowest: int = 0) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not lowest <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is {lowest} to 65535, got {value}")
    return value


def bind_error(exc: OSError) -> bool:
    """A listening socket refused for a reason the user can fix (a busy port, an address
    not this machine's, a privileged port, a host name that does not resolve)."""
    binds = (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)
    return isinstance(exc, socket.gaierror) or exc.errno in binds


def ib_port(text: str) -> int:
    return port(text, lowest=1)  # a port to connect to: 0 is no port


def positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    """An argparse type: a number of `kind` above 0 (and finite)."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def day(text: str) -> date:
    """A date as YYYY-MM-DD (the simulator's session date)."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def clock(text: str) -> time:
    """A time of day HH:MM (`--backfill-from`)."""
    from ibstream.server.settings import parse_clock

    try:
        return parse_clock(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def record_spec(text: str) -> str:
    """A `--record-contract` SPEC[:tick_types], checked now (its tick types), kept as given."""
    from ibstream.errors import StreamError
    from ibstream.server.recording import parse_record_spec

    try:
        parse_record_spec(text)
    except StreamError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    return text.strip()
