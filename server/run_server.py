"""Run the ibstream server in the background and manage it.

run_server.py start [--config FILE] [--demo] [--host H] [--port P] ...   detached, waits for /health
run_server.py status | stop | logs [-f] [-n N]   [--port P | --config FILE]
    (without a port: status lists every server; stop and logs act on the only one running)
run_server.py run [--config FILE] ...     in the foreground (systemd, nohup, a terminal)
run_server.py CONFIG.toml                 the same as `run --config CONFIG.toml`
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TextIO

from ibstream.server import background, daemon
from ibstream.server import config as server_config
from ibstream.server.background import ServerStartError
from ibstream.server.config import ConfigError, ServeOptions
from ibstream.server.probe import health

COMMANDS = ("start", "status", "stop", "logs", "run")
TIMEOUTS = {
    "start": (30.0, "for /health"),
    "stop": (15.0, "for the exit after SIGTERM, then SIGKILL"),
}
EPILOG = """\
Every option can also be set as an environment variable (IBSTREAM_PORT, IBSTREAM_IB_PORT,
IBSTREAM_DEMO=1, ...) or as a key of the TOML --config file (port = 8001, ...).
Precedence: command line > environment > config file > defaults. Unknown config keys and
values of the wrong type are errors.

Each server is keyed by its port: pid file, state and log in $IBSTREAM_STATE_DIR (default
$XDG_STATE_HOME/ibstream, i.e. ~/.local/state/ibstream) as server-PORT.pid / .json / .log.
status exits 0 when the server answers, 1 when its process runs but /health does not
answer, 3 when no server runs. Without a port (--port, $IBSTREAM_PORT or the config's `port`)
status lists every server started here and exits 0 when at least one answers; stop and logs
act on the only one running, and when several run they list them and exit 2.
"""


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="run_server.py", description=__doc__, epilog=EPILOG, formatter_class=formatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    helps = {
        "start": "start a server in the background; wait until it answers /health",
        "status": "is a server running on the port? (url, pid, uptime, IB connection)",
        "stop": "stop the background server on the port (SIGTERM, SIGKILL after --timeout)",
        "logs": "print the server's log",
        "run": "run a server in the foreground until SIGTERM / Ctrl-C (systemd, nohup)",
    }
    for name in COMMANDS:
        command = sub.add_parser(
            name,
            help=helps[name],
            description=helps[name],
            epilog=EPILOG,
            formatter_class=formatter,
        )
        used = "keys as below" if name in ("start", "run") else "its host and port are used"
        command.add_argument("--config", metavar="FILE", help=f"TOML config ({used})")
        server_config.add_options(command, None if name in ("start", "run") else ("host", "port"))
        if name in TIMEOUTS:
            wait, what = TIMEOUTS[name]
            command.add_argument(
                "--timeout",
                type=float,
                default=wait,
                metavar="SECONDS",
                help=f"how long to wait {what} (default {wait:g})",
            )
    logs = sub.choices["logs"]
    logs.add_argument("-n", "--lines", type=int, metavar="N", help="only the last N lines")
    logs.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new lines while the server runs"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        argv = ["run", "--config", *argv]  # the old form: run_server.py CONFIG.toml
    args = build_parser().parse_args(argv)
    given = {key.name: getattr(args, key.name, None) for key in server_config.keys()}
    try:
        options = server_config.resolve(given, os.environ, args.config)
        if args.command in ("status", "stop", "logs") and "port" not in server_config.merged(
            given, os.environ, args.config
        ):
            return ANY_PORT[args.command](args)
        return HANDLERS[args.command](args, options)
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:
        return _fail(str(exc), 2)
    except ServerStartError as exc:
        return _fail(str(exc), 1)


def cmd_start(args: argparse.Namespace, options: ServeOptions) -> int:
    started = background.start(options, timeout=args.timeout)
    for note in started.notes:
        print(note)
    record = started.record
    if not started.already_running:
        print(f"started the ibstream server at {started.url} (pid {record.pid})")
    elif record is not None:
        up = _duration(time.time() - record.started_at)
        print(f"an ibstream server already runs at {started.url} (pid {record.pid}, up {up})")
    else:
        print(f"an ibstream server already answers at {started.url} (no pid file: {_foreign()})")
    print(_ib_line(started.health, record.demo if record else False))
    if record is not None:
        print(f"log: {record.log_file}")
    return 0


def cmd_status(args: argparse.Namespace, options: ServeOptions) -> int:
    record = _find(options.port)
    url = record.url if record else options.url
    body = health(url)
    if body is None and record is None:
        print(f"no ibstream server runs on port {options.port}")
        return 3
    if body is None:
        print(
            f"the ibstream server on port {options.port} (pid {record.pid}) runs but does not "
            f"answer /health at {url}: starting, or stuck; see `run_server.py logs --port "
            f"{options.port}`"
        )
        return 1
    print(f"ibstream server running at {url}")
    if record is not None:
        print(f"  pid: {record.pid}, up {_duration(time.time() - record.started_at)}")
    else:
        print(f"  pid: unknown, {_foreign()}")
    print(f"  {_ib_line(body, record.demo if record else False)}")
    connections, streams = body.get("connections"), body.get("upstream_streams")
    print(f"  clients: {connections} connections, {streams} upstream streams")
    if record is not None:
        print(f"  log: {record.log_file}")
    return 0


def cmd_stop(args: argparse.Namespace, options: ServeOptions) -> int:
    record = _find(options.port)
    if record is None:
        if health(options.url) is not None:
            return _fail(
                f"an ibstream server answers at {options.url} but {_foreign()}; stop it where "
                "it was started (e.g. `systemctl --user stop ibstream`)",
                1,
            )
        print(f"no ibstream server runs on port {options.port}; nothing to stop")
        return 0
    killed = daemon.stop_server(record, args.timeout)
    if killed:
        print(
            f"run_server.py: the server (pid {record.pid}) did not exit within {args.timeout:g} s "
            "of SIGTERM: killed it (SIGKILL); its streams ended without `complete`",
            file=sys.stderr,
        )
    print(f"stopped the ibstream server at {record.url} (pid {record.pid})")
    return 0


def cmd_logs(args: argparse.Namespace, options: ServeOptions) -> int:
    record = _find(options.port, sys.stderr)
    path = Path(record.log_file) if record else daemon.default_log(options.port)
    try:
        handle = open(path, "rb")
    except OSError as exc:
        return _fail(f"no log for port {options.port}: {exc.strerror} ({path})", 1)
    out = sys.stdout.buffer
    try:
        with handle:
            if args.lines is None:
                shutil.copyfileobj(handle, out)
            else:
                out.writelines(collections.deque(handle, maxlen=max(args.lines, 0)))
            out.flush()
            while args.follow and record and daemon.is_server_process(record.pid, record.port):
                time.sleep(0.2)  # a file has no "new data" event to wait on; tail -f polls too
                out.write(handle.read())
                out.flush()
            if args.follow:
                out.write(handle.read())
                out.flush()
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `logs | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def cmd_run(args: argparse.Namespace, options: ServeOptions) -> int:
    from ibstream.cli import main as ibstream

    if options.token:  # `serve` reads it from there: argv would show it to `ps`
        os.environ[server_config.TOKEN_ENV] = options.token
    return ibstream(options.serve_argv())


def status_all(args: argparse.Namespace) -> int:
    """`status` without a port: every server started here, one line each."""
    records, notes = daemon.find_all()
    for note in notes:
        print(note)
    if not records:
        print(f"no ibstream server runs (none recorded in {daemon.state_dir()})")
        return 3
    answering = 0
    for record in records:
        body = health(record.url)
        answering += body is not None
        up = _duration(time.time() - record.started_at)
        state = _ib_line(body, record.demo) if body else "does not answer /health"
        print(f"port {record.port}  pid {record.pid}  {record.url}  up {up}  {state}")
    return 0 if answering else 1


def the_only_one(args: argparse.Namespace) -> int:
    """`stop` / `logs` without a port: the only server running, else a list and exit 2."""
    records, notes = daemon.find_all()
    for note in notes:
        print(note, file=sys.stderr)
    if len(records) == 1:
        record = records[0]
        options = ServeOptions(port=record.port)
        return HANDLERS[args.command](args, options)
    if not records:
        if args.command == "stop":
            print("no ibstream server runs; nothing to stop")
            return 0
        return _fail("no ibstream server runs; give --port P for the log of an earlier one", 1)
    ports = ", ".join(str(record.port) for record in records)
    print(
        f"run_server.py: {len(records)} ibstream servers run (ports {ports}); "
        f"say which with --port P:",
        file=sys.stderr,
    )
    for record in records:
        print(f"  port {record.port}  pid {record.pid}  {record.url}", file=sys.stderr)
    return 2


ANY_PORT = {"status": status_all, "stop": the_only_one, "logs": the_only_one}


def _find(port: int, out: TextIO | None = None) -> daemon.Record | None:
    """The server recorded for `port`; a stale record is removed, and said so on `out`."""
    record, note = daemon.find(port)
    if note:
        print(note, file=out or sys.stdout)
    return record


def _ib_line(body: dict, demo: bool) -> str:
    ib = body.get("ib") or {}
    where = f"IB at {ib.get('host')}:{ib.get('port')}"
    if demo:
        where = "the gateway simulator (demo data)"
    if ib.get("connected"):
        return f"IB: connected to {where}"
    error = f" ({ib['last_error']})" if ib.get("last_error") else ""
    return f"IB: not connected to {where}{error}; the server keeps retrying"


def _foreign() -> str:
    return f"not started by `run_server.py start` (no pid file in {daemon.state_dir()})"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [(days, "d"), (hours, "h"), (minutes, "min"), (secs, "s")]
    shown = [f"{value} {unit}" for value, unit in parts if value]
    return " ".join(shown[:2]) or "0 s"


def _fail(message: str, code: int) -> int:
    print(f"run_server.py: error: {message}", file=sys.stderr)
    return code


HANDLERS = {
    "start": cmd_start,
    "status": cmd_status,
    "stop": cmd_stop,
    "logs": cmd_logs,
    "run": cmd_run,
}

if __name__ == "__main__":
    sys.exit(main())
