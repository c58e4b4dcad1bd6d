"""`ensure_server()`: use the ibstream server that is running, or start one in the background.

A notebook or script calls it first. If `GET /health` answers at the URL, that server is
used as it is. Otherwise `python -m ibstream.cli serve` is started as a detached process
(its own session, output to a log file), against IB Gateway / TWS when one answers on the
IB port and against the gateway simulator (`--demo`) when none does. The returned
`ServerInfo` says which of these happened and stops only a server it started.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

log = logging.getLogger(__name__)
DEFAULT_URL = "http://127.0.0.1:8001"
LOG_TAIL_LINES = 20


class ServerStartError(RuntimeError):
    """The server could not be reached nor started; the message holds its log's last lines."""


@dataclass
class ServerInfo:
    """Which server `ensure_server` found or started: `url`, `started`, `pid`, `mode`
    ("existing", "ib" or "simulator") and the started server's `log_file`."""

    url: str
    started: bool
    pid: int | None
    mode: str
    log_file: Path | None = None
    _process: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    def describe(self) -> str:
        if not self.started:
            return f"using the ibstream server already running at {self.url}"
        source = "the gateway simulator (demo data)" if self.mode == "simulator" else "IB"
        return (
            f"started an ibstream server at {self.url} on {source} "
            f"(pid {self.pid}, log {self.log_file})"
        )

    def __repr__(self) -> str:
        return f"<ServerInfo: {self.describe()}>"

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the server if this call started it (SIGTERM, then SIGKILL after `timeout`);
        returns whether a process was stopped. A server found running is left alone."""
        if self._process is None or self._process.poll() is not None:
            return False
        stop_process(self._process, timeout)
        log.info("stopped the ibstream server at %s (pid %s)", self.url, self.pid)
        return True


def default_url() -> str:
    """`$IBSTREAM_URL`, else http://127.0.0.1:8001."""
    return os.environ.get("IBSTREAM_URL") or DEFAULT_URL


def ensure_server(
    url: str | None = None,
    *,
    demo: bool | None = None,
    ib_host: str = "127.0.0.1",
    ib_port: int = 4002,
    timeout: float = 30.0,
    log_file: str | Path | None = None,
) -> ServerInfo:
    """The server at `url` (default `default_url()`), started in the background if absent.

    `demo` True always uses the simulator, False never does (the server then waits for IB),
    None uses it when nothing answers on ib_host:ib_port. Raises ServerStartError (with the
    log's last lines) if a started server does not answer /health within `timeout` seconds.
    """
    url = (url or default_url()).rstrip("/")
    if health(url) is not None:
        info = ServerInfo(url, started=False, pid=None, mode="existing")
        log.info("%s", info.describe())
        return info
    host, port = _local_address(url)
    simulator = demo if demo is not None else not port_answers(ib_host, ib_port)
    path = Path(log_file) if log_file else state_dir() / f"server-{port}.log"
    extra = ["--demo"] if simulator else []
    process = spawn_server(host, port, ib_host, ib_port, path, extra)
    try:
        wait_for_health(url, process, timeout, path)
    except BaseException:
        stop_process(process)
        raise
    if process.poll() is not None:  # lost a race to another server on this port: use that one
        return ServerInfo(url, started=False, pid=None, mode="existing")
    mode = "simulator" if simulator else "ib"
    info = ServerInfo(url, True, process.pid, mode, path, process)
    log.info("%s", info.describe())
    return info


def spawn_server(
    host: str,
    port: int,
    ib_host: str,
    ib_port: int,
    log_file: Path,
    extra_args: Sequence[str] = (),
) -> subprocess.Popen:
    """`python -m ibstream.cli serve ...` as a detached process (own session, no terminal),
    stdout and stderr appended to `log_file`."""
    command = [sys.executable, "-m", "ibstream.cli", "serve", "--host", host, "--port", str(port)]
    command += ["--ib-host", ib_host, "--ib-port", str(ib_port), *extra_args]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as sink:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_for_health(url: str, process: subprocess.Popen, timeout: float, log_file: Path) -> None:
    """Poll /health until it answers; ServerStartError if the process ends or time runs out."""
    deadline = time.monotonic() + timeout
    while health(url) is None:
        if process.poll() is not None:
            if health(url) is not None:
                return  # another server took the port meanwhile; ensure_server uses it
            raise ServerStartError(
                f"the ibstream server for {url} exited with code {process.returncode}; "
                f"its log ({log_file}) ends with:\n{log_tail(log_file)}"
            )
        if time.monotonic() > deadline:
            raise ServerStartError(
                f"the ibstream server for {url} did not answer /health within {timeout:g} s; "
                f"its log ({log_file}) ends with:\n{log_tail(log_file)}"
            )
        time.sleep(0.1)


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM (a graceful server shutdown), then SIGKILL if it has not ended in `timeout`."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def health(url: str, timeout: float = 2.0) -> dict | None:
    """The /health body of an ibstream server at `url`, or None if none answers there."""
    try:
        with httpx.Client(timeout=timeout, trust_env=not _is_loopback(url)) as http:
            response = http.get(f"{url}/health")
        body = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    is_ibstream = response.status_code == 200 and isinstance(body, dict)
    return body if is_ibstream and "protocol_version" in body else None


def port_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on host:port (IB Gateway / TWS)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def state_dir() -> Path:
    """Per-user directory for server logs ($XDG_STATE_HOME/ibstream or ~/.local/state/ibstream)."""
    base = os.environ.get("XDG_STATE_HOME") or os.environ.get("LOCALAPPDATA")
    return (Path(base) if base else Path.home() / ".local" / "state") / "ibstream"


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read the log: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(the log is empty)"


def _local_address(url: str) -> tuple[str, int]:
    """Host and port to bind a server for `url`; only this machine's loopback qualifies."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname or not _is_loopback(url):
        raise ServerStartError(
            f"no ibstream server answers at {url}, and only a plain http URL on this machine "
            "(127.0.0.1 / localhost) can be started here; start it with `ibstream serve` there"
        )
    return parts.hostname, parts.port or 80


def _is_loopback(url: str) -> bool:
    host = urlsplit(url if "://" in url else f"http://{url}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
