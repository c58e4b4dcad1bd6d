"""`ensure_server()`: use the ibstream server that is running, or start one in the background.

A notebook or script calls it first. If `GET /health` answers at the URL, that server is
used as it is. Otherwise, when no URL was given (the URL is then `$IBSTREAM_URL` or the
default port) or a start was asked for (`start=True`, or `demo=True`), a server is started the way `python server/run_server.py start` starts
one (detached, pid file and log in the state directory, so `run_server.py status / stop / logs`
see it), against IB Gateway / TWS when one answers on the IB port and against the gateway
simulator when none does. An explicit URL where nothing answers is an error, not a start: a
typo'd port must not leave a background simulator running that the script never meant to
start. The returned `ServerInfo` says which of these happened and stops only a server it
started.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ibstream.protocol.loopback import is_loopback_url
from ibstream.server import background, daemon
from ibstream.server import config as server_config
from ibstream.server.background import ServerStartError
from ibstream.server.probe import health, port_answers

__all__ = [
    "ServerInfo",
    "ServerNotRunning",
    "ServerStartError",
    "default_url",
    "ensure_server",
    "health",
]

log = logging.getLogger(__name__)


class ServerNotRunning(ServerStartError):
    """No server answers at the URL given, and `ensure_server` was not asked to start one."""


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
    _record: daemon.Record | None = field(default=None, repr=False, compare=False)

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
        returns whether a process was stopped. A server found running is left alone, and so
        is one already stopped (e.g. by `run_server.py stop`)."""
        if self._process is None or self._record is None or self._process.poll() is not None:
            return False
        daemon.stop_server(self._record, timeout)
        self._process.wait()
        log.info("stopped the ibstream server at %s (pid %s)", self.url, self.pid)
        return True


def default_url() -> str:
    """`$IBSTREAM_URL`, else the server `$IBSTREAM_HOST` / `$IBSTREAM_PORT` describe
    (http://127.0.0.1:8001 by default)."""
    if url := os.environ.get("IBSTREAM_URL"):
        return url
    return server_config.resolve({}, _env_of("host", "port")).url


def ensure_server(
    url: str | Sequence[str] | None = None,
    *,
    start: bool | None = None,
    demo: bool | None = None,
    ib_host: str | None = None,
    ib_port: int | None = None,
    config: str | Path | None = None,
    token: str | None = None,
    timeout: float = 30.0,
    log_file: str | Path | None = None,
    record: str | Path | None = None,
    record_contracts: Sequence[str] = (),
) -> ServerInfo:
    """The server at `url` (default `default_url()`), started in the background if absent
    and allowed: `start` None starts one only when no `url` was given (or `demo=True` asks
    for the simulator), True always, False never. Where no server answers and none may be
    started, raises `ServerNotRunning` saying so.

    Options not given here come from the environment (`IBSTREAM_IB_PORT`, ...), then the
    TOML `config`, as for `run_server.py start`; the URL decides host and port. `demo` True
    always uses the simulator, False never does (the server then waits for IB), None (and
    set nowhere else) uses it when nothing answers on the IB port. `token` (default
    `$IBSTREAM_TOKEN` or the config's) is the started server's token; clients pass the same
    (`Client(token=...)`, which also defaults to `$IBSTREAM_TOKEN`). Raises ServerStartError
    (with the log's last lines) if a started server does not answer /health within `timeout` s.

    `record` (a directory or s3:// URI) makes a started server record every stream into that
    tick store (`serve --record`), `record_contracts` the streams it keeps recorded from
    start-up (`--record-contract`); a server found running is used as it is.

    `url` may be a list (a client's `servers`): the first that answers, in order, is used;
    where none does, the first is the one started (`start=True`) or named in the error.
    """
    explicit = url is not None
    urls = _urls(url) if explicit else [default_url().rstrip("/")]
    for candidate in urls:
        if health(candidate) is not None:
            return _found(candidate)
    url = urls[0]
    if not (start if start is not None else not explicit or demo is True):
        raise _not_running(url, explicit, urls)
    host, port = _local_address(url)
    given = {"host": host, "port": port, "ib_host": ib_host, "ib_port": ib_port, "demo": demo}
    given["token"] = token  # reaches the server through its environment, not its argv
    given["record"] = None if record is None else str(record)
    given["record_contract"] = " ".join(record_contracts) or None
    values = server_config.merged(given, os.environ, config)
    if "demo" not in values:
        probe = server_config.ServeOptions(**values)
        values["demo"] = not port_answers(probe.ib_host, probe.ib_port)
    options = server_config.ServeOptions(**values)
    log_path = Path(log_file) if log_file else None
    started = background.start(options, timeout=timeout, log_file=log_path)
    for note in started.notes:
        log.warning("%s", note)
    if started.already_running:  # it came up meanwhile (e.g. another notebook started it)
        return _found(url)
    mode = "simulator" if options.demo else "ib"
    record = started.record
    logged = Path(record.log_file)
    info = ServerInfo(url, True, record.pid, mode, logged, started.process, record)
    log.info("%s", info.describe())
    return info


def _urls(url: object) -> list[str]:
    """The URLs of `url` (one, or a non-empty list / tuple of them)."""
    items = list(url) if isinstance(url, list | tuple) else [url]
    if not items or not all(isinstance(item, str) for item in items):
        raise TypeError(f"url must be a URL or a non-empty list of URLs; got {url!r}")
    return [item.rstrip("/") for item in items]


def _not_running(url: str, explicit: bool, urls: Sequence[str] = ()) -> ServerNotRunning:
    port = urlsplit(url if "://" in url else f"http://{url}").port
    serve = f"`ibstream serve{f' --port {port}' if port else ''}`"
    default = "" if not explicit else f", or ensure_server() to use {default_url()}"
    where = " nor at ".join(urls) if len(urls) > 1 else url
    return ServerNotRunning(
        f"no ibstream server answers at {where} (GET /health); check the URL and port, "
        f"start one there with {serve} or ensure_server({url!r}, start=True){default}"
    )


def _found(url: str) -> ServerInfo:
    info = ServerInfo(url, started=False, pid=None, mode="existing")
    log.info("%s", info.describe())
    return info


def _env_of(*names: str) -> dict[str, str]:
    wanted = {f"IBSTREAM_{name.upper()}" for name in names}
    return {key: value for key, value in os.environ.items() if key in wanted}


def _local_address(url: str) -> tuple[str, int]:
    """Host and port to bind a server for `url`; only this machine's loopback qualifies."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname or not is_loopback_url(url):
        raise ServerStartError(
            f"no ibstream server answers at {url}, and only a plain http URL on this machine "
            "(127.0.0.1 / localhost) can be started here; start it with `ibstream serve` there"
        )
    return parts.hostname, parts.port or 80
