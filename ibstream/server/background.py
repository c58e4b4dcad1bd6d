"""Start an ibstream server in the background: `python -m ibstream.cli serve ...` as a detached
process (its own session, stdin from /dev/null, output appended to its log), recorded by
`ibstream.server.daemon` so that `run_server.py` and `ensure_server()` share it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ibstream.server.config import ServeOptions
from ibstream.server.daemon import (
    Record,
    default_log,
    find,
    forget,
    is_server_process,
    log_tail,
    state_dir,
    stop_pid,
    write_record,
)
from ibstream.server.guard import bind_problem
from ibstream.server.probe import health, listen_problem

LOG_ROTATE_BYTES = 10 * 2**20  # a log bigger than this when a server starts moves to <log>.1


class ServerStartError(RuntimeError):
    """The server could not be reached nor started; the message says why (and its log's end)."""


@dataclass
class Started:
    """What `start` found or did; `record` is None for a server answering without a pid file."""

    url: str
    health: dict
    record: Record | None
    already_running: bool
    notes: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = field(default=None, repr=False)


def start(options: ServeOptions, *, timeout: float = 30.0, log_file: Path | None = None) -> Started:
    """The server for `options.port`: the one running there, else a new detached one.

    Waits up to `timeout` s for /health; ServerStartError if the port is taken by another
    program, or the new server exits or stays silent (its process is then stopped).
    """
    state_dir().mkdir(parents=True, exist_ok=True)
    with _port_lock(options.port, timeout):
        record, note = find(options.port)
        notes = [note] if note else []
        if record is not None:
            body = wait_for_health(record, timeout)
            return Started(record.url, body, record, True, notes)
        if (body := health(options.url)) is not None:
            return Started(options.url, body, None, True, notes)
        if problem := listen_problem(options.host, options.port) or bind_problem(
            options.host, options.token
        ):
            raise ServerStartError(problem)
        record, process, offset = _spawn(options, log_file or default_log(options.port))
        try:
            body = wait_for_health(record, timeout, process, offset)
        except BaseException:
            stop_pid(process.pid, 5.0)
            process.wait()
            forget(record.port, record.pid)
            raise
        return Started(record.url, body, record, False, notes, process)


@contextlib.contextmanager
def _port_lock(port: int, timeout: float) -> Iterator[None]:
    """One start at a time per port, across processes (an advisory lock file, removed when
    the start ends, whether it worked or not)."""
    path = state_dir() / f"server-{port}.lock"
    deadline = time.monotonic() + timeout
    while True:
        handle = open(path, "a")  # noqa: SIM115 - closed below on every path
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"another start of the server on port {port} is still under way"
                ) from None
            time.sleep(0.1)
            continue
        if _same_file(handle, path):
            break
        handle.close()  # the holder before us removed this file: lock the new one
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # before the unlock, so a waiter sees it is stale
        handle.close()


def _same_file(handle: IO[str], path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


def _spawn(options: ServeOptions, log_file: Path) -> tuple[Record, subprocess.Popen, int]:
    command = [sys.executable, "-m", "ibstream.cli", *options.serve_argv()]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    if log_file.exists() and log_file.stat().st_size > LOG_ROTATE_BYTES:
        log_file.replace(log_file.with_name(log_file.name + ".1"))
    with open(log_file, "ab") as sink:
        offset = sink.tell()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        sink.write(f"---- {stamp} starting: {shlex.join(command)}\n".encode())
        sink.flush()
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=options.serve_env(os.environ),  # the token goes here, never on the command line
        )
    record = Record(
        options.port, process.pid, options.url, options.demo, str(log_file), time.time(), command
    )
    write_record(record)
    return record, process, offset


def wait_for_health(
    record: Record, timeout: float, process: subprocess.Popen | None = None, offset: int = 0
) -> dict:
    """Poll /health until it answers; ServerStartError if the process ends or time runs out."""
    deadline = time.monotonic() + timeout
    while (body := health(record.url, timeout=1.0)) is None:
        if _has_exited(record, process):
            code = f" with code {process.returncode}" if process else ""
            raise ServerStartError(
                f"the ibstream server for {record.url} exited{code}; its log "
                f"({record.log_file}) ends with:\n{log_tail(Path(record.log_file), offset=offset)}"
            )
        if time.monotonic() > deadline:
            raise ServerStartError(
                f"the ibstream server for {record.url} (pid {record.pid}) did not answer /health "
                f"within {timeout:g} s; its log ({record.log_file}) ends with:\n"
                f"{log_tail(Path(record.log_file), offset=offset)}"
            )
        time.sleep(0.1)
    return body


def _has_exited(record: Record, process: subprocess.Popen | None) -> bool:
    if process is not None:
        return process.poll() is not None
    return not is_server_process(record.pid, record.port)
