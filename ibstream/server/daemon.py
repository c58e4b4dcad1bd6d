"""Records of the background ibstream servers on this machine, one per port, and stopping them.

A per-user state directory holds `server-<port>.pid` (the pid), `server-<port>.json` (url,
mode, log file, start time, command) and by default `server-<port>.log`, so that
`run_server.py start/status/stop/logs` and `ensure_server()` see the servers the other
started. A pid file whose process is gone, or whose pid now belongs to another program
(checked on its command line), is stale: it is removed and reported.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from ibstream.server.config import local_url

LOG_TAIL_LINES = 20


@dataclass
class Record:
    """A background server as its state file describes it."""

    port: int
    pid: int
    url: str
    demo: bool
    log_file: str
    started_at: float
    command: list[str]


def state_dir() -> Path:
    """`$IBSTREAM_STATE_DIR`, else `$XDG_STATE_HOME/ibstream`, else ~/.local/state/ibstream."""
    if explicit := os.environ.get("IBSTREAM_STATE_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME")
    return (Path(base) if base else Path.home() / ".local" / "state") / "ibstream"


def pid_path(port: int) -> Path:
    return state_dir() / f"server-{port}.pid"


def default_log(port: int) -> Path:
    return state_dir() / f"server-{port}.log"


def _record_path(port: int) -> Path:
    return state_dir() / f"server-{port}.json"


def is_server_process(pid: int, port: int) -> bool:
    """Whether `pid` is a live (not zombie) `ibstream.cli serve --port <port>` process."""
    try:
        proc = psutil.Process(pid)
        cmd = [] if proc.status() == psutil.STATUS_ZOMBIE else proc.cmdline()
    except psutil.Error:
        return False
    port_arg = cmd[cmd.index("--port") + 1] if "--port" in cmd[:-1] else None
    return "ibstream.cli" in cmd and "serve" in cmd and port_arg == str(port)


def find(port: int) -> tuple[Record | None, str | None]:
    """The live server recorded for `port`, and a note when a stale record was removed."""
    try:
        text = pid_path(port).read_text().strip()
    except FileNotFoundError:
        return None, None
    pid = int(text) if text.isdecimal() else None
    if pid is not None and is_server_process(pid, port):
        with contextlib.suppress(psutil.NoSuchProcess):
            return _load(port, pid), None
    forget(port, pid)
    return None, f"removed a stale pid file for port {port}: {_stale_reason(pid, text)}"


def find_all() -> tuple[list[Record], list[str]]:
    """Every live recorded server, by port, and a note per stale record removed."""
    records, notes = [], []
    for path in sorted(state_dir().glob("server-*.pid")):
        port = path.stem.removeprefix("server-")
        if not port.isdecimal():
            continue
        record, note = find(int(port))
        records += [record] if record else []
        notes += [note] if note else []
    return sorted(records, key=lambda r: r.port), notes


def _stale_reason(pid: int | None, text: str) -> str:
    if pid is None:
        return f"it holds {text[:40]!r}, not a pid"
    try:
        proc = psutil.Process(pid)
        if proc.status() != psutil.STATUS_ZOMBIE:
            return f"pid {pid} is now another program ({proc.name()}), not an ibstream server"
    except psutil.Error:
        pass
    return f"pid {pid} no longer runs"


def _load(port: int, pid: int) -> Record:
    try:
        fields = json.loads(_record_path(port).read_text())
        record = Record(**fields)
        if record.pid == pid:
            return record
    except (OSError, ValueError, TypeError):
        pass
    proc = psutil.Process(pid)  # no usable state file: what the process itself tells
    with proc.oneshot():
        cmd, created = proc.cmdline(), proc.create_time()
    host = cmd[cmd.index("--host") + 1] if "--host" in cmd[:-1] else "127.0.0.1"
    log_file = str(default_log(port))
    url = local_url(host, port)
    return Record(port, pid, url, "--demo" in cmd, log_file, created, cmd)


def forget(port: int, pid: int | None) -> None:
    """Remove the records of `port` if they still name `pid` (None: whatever they hold)."""
    with contextlib.suppress(OSError):
        text = pid_path(port).read_text().strip()
        if pid is None or text == str(pid):
            pid_path(port).unlink()
            _record_path(port).unlink(missing_ok=True)


def write_record(record: Record) -> None:
    """Write the state file, then the pid file, each atomically (the pid file last)."""
    _write_atomic(_record_path(record.port), json.dumps(asdict(record), indent=1))
    _write_atomic(pid_path(record.port), f"{record.pid}\n")


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(text)
    temporary.replace(path)


def stop_server(record: Record, timeout: float) -> bool:
    """Stop a recorded server (see `stop_pid`), say so in its log, remove its records.
    Returns whether it had to be killed."""
    killed = stop_pid(record.pid, timeout)
    how = f"killed (SIGKILL) {timeout:g} s after SIGTERM" if killed else "stopped (SIGTERM)"
    with contextlib.suppress(OSError), open(record.log_file, "a") as log:
        log.write(f"---- {time.strftime('%Y-%m-%d %H:%M:%S')} pid {record.pid} {how}\n")
    forget(record.port, record.pid)
    return killed


def stop_pid(pid: int, timeout: float) -> bool:
    """SIGTERM (graceful shutdown), SIGKILL if still running after `timeout` s.
    Returns whether it had to be killed."""
    try:
        proc = psutil.Process(pid)
        proc.terminate()
    except psutil.NoSuchProcess:
        return False
    if _ended(proc, timeout):
        return False
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.kill()
    _ended(proc, 5.0)
    return True


def _ended(proc: psutil.Process, timeout: float) -> bool:
    """Wait for a process (maybe not our child) to end; a zombie has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def log_tail(path: Path, lines: int = LOG_TAIL_LINES, offset: int = 0) -> str:
    """The last `lines` lines of a log after byte `offset` (this start's own lines)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError as exc:
        return f"(cannot read the log: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(the log is empty)"
