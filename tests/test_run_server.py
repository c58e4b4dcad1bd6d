"""`python server/run_server.py start / status / stop / logs / run` as a user runs it: real
processes on free ports, state (pid files, logs) in a temporary $IBSTREAM_STATE_DIR. The
`ports` fixture hands out the ports and afterwards stops every process still serving on one
of them, so no server outlives a test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import websockets.sync.client

from ibstream.client import Client
from ibstream.server import daemon
from ibstream.server.config import keys
from ibstream.server.launch import ensure_server, health
from tests.client_fixtures import free_port
from tests.test_cli import assert_serves_then_stops_on_sigterm

SCRIPT = Path(__file__).resolve().parents[1] / "server" / "run_server.py"
ES = 637533641


def servers_on(port: int) -> list[psutil.Process]:
    """Live (not zombie) processes whose command line serves `--port <port>`."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["status"] == psutil.STATUS_ZOMBIE or "serve" not in cmd:
            continue
        if "--port" in cmd[:-1] and cmd[cmd.index("--port") + 1] == str(port):
            found.append(proc)
    return found


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def env(tmp_path, monkeypatch) -> dict[str, str]:
    """The environment of the script: no IBSTREAM_* setting but a private state dir (also
    for this process, so `ensure_server` here shares it)."""
    for name in list(os.environ):
        if name.startswith("IBSTREAM_") and name != "IBSTREAM_SESSION_DATE":  # pinned by conftest
            monkeypatch.delenv(name)
    monkeypatch.setenv("IBSTREAM_STATE_DIR", str(tmp_path / "state"))
    return dict(os.environ)


@pytest.fixture
def ports(env) -> Iterator[Callable[[], int]]:
    """A free port per call; afterwards every process serving on one of them is stopped."""
    handed: list[int] = []

    def new() -> int:
        handed.append(free_port())
        return handed[-1]

    yield new
    survivors = [proc for port in handed for proc in servers_on(port)]
    for proc in survivors:
        proc.terminate()
    _, alive = psutil.wait_procs(survivors, timeout=10)
    for proc in alive:
        proc.kill()
    assert not [proc for port in handed for proc in servers_on(port)]


def run(*args: object, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPT), *map(str, args)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def one_line_error(result: subprocess.CompletedProcess, code: int) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_start_status_collect_logs_stop(ports, env):
    port = ports()
    url = f"http://127.0.0.1:{port}"
    started = run("start", "--demo", "--port", port, env=env)
    assert started.returncode == 0, started.stderr
    assert f"started the ibstream server at {url}" in started.stdout
    assert "IB: connected to the gateway simulator" in started.stdout
    pid = int(daemon.pid_path(port).read_text())
    assert [proc.pid for proc in servers_on(port)] == [pid]

    status = run("status", "--port", port, env=env)
    assert status.returncode == 0, status.stdout
    assert url in status.stdout and f"pid: {pid}, up " in status.stdout
    assert "IB: connected" in status.stdout

    with Client(url) as client:
        ticks = client.collect("ES", limit=30, progress=False)
    assert len(ticks) == 30 and set(ticks["contract_id"]) == {ES}

    again = run("start", "--demo", "--port", port, env=env)
    assert again.returncode == 0 and f"already runs at {url} (pid {pid}" in again.stdout
    assert not ensure_server(url).started
    assert [proc.pid for proc in servers_on(port)] == [pid]

    logs = run("logs", "--port", port, env=env)
    assert logs.returncode == 0 and f"serving on {url}" in logs.stdout
    assert len(run("logs", "--port", port, "-n", 2, env=env).stdout.splitlines()) == 2
    follow = subprocess.Popen(
        [sys.executable, str(SCRIPT), "logs", "--port", str(port), "-f"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        while "serving on" not in follow.stdout.readline():
            pass
        with websockets.sync.client.connect(f"ws://127.0.0.1:{port}/v2/ws/stream") as ws:
            subscribe = {"contract_id": "ES", "tick_types": ["last"]}
            ws.send(json.dumps({"type": "subscribe", "id": "1", "data": subscribe}))
            while json.loads(ws.recv(10))["type"] != "tick":
                pass
            stopped = run("stop", "--port", port, env=env)
            completes = [m for m in map(json.loads, ws) if m["type"] == "complete"]
        assert follow.wait(10) == 0  # --follow ends with the server
    finally:
        follow.kill()
        follow.communicate()
    assert stopped.returncode == 0 and f"stopped the ibstream server at {url}" in stopped.stdout
    assert [m["data"]["reason"] for m in completes] == ["server_shutdown"]  # graceful
    assert gone(pid) and not daemon.pid_path(port).exists()
    after = run("status", "--port", port, env=env)
    assert after.returncode == 3 and f"no ibstream server runs on port {port}" in after.stdout
    assert f"pid {pid} stopped (SIGTERM)" in run("logs", "--port", port, env=env).stdout


def test_the_server_outlives_the_shell_that_started_it(ports, env):
    port = ports()
    command = f'"{sys.executable}" "{SCRIPT}" start --demo --port {port} && echo "shell $$ done"'
    shell = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True)
    assert shell.returncode == 0, shell.stderr
    shell_pid = int(re.search(r"shell (\d+) done", shell.stdout).group(1))
    pid = int(daemon.pid_path(port).read_text())
    assert gone(shell_pid) and not gone(pid)
    assert os.getsid(pid) == pid  # a session of its own: no terminal hangup reaches it
    assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
    assert os.readlink(f"/proc/{pid}/fd/1") == str(daemon.default_log(port))
    assert health(f"http://127.0.0.1:{port}")["status"] == "ok"
    assert run("stop", "--port", port, env=env).returncode == 0 and gone(pid)


def test_unknown_config_key_is_an_error_that_names_it(ports, env, tmp_path):
    port = ports()
    config = tmp_path / "ibstream.toml"
    config.write_text(f"port = {port}\nib_prot = 4002\n")
    error = one_line_error(run("start", "--config", config, env=env), 2)
    assert "unknown key 'ib_prot' (did you mean 'ib_port'?)" in error
    assert "valid keys: host, port, ib_host, ib_port" in error and str(config) in error
    assert servers_on(port) == []


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('port = "8001"', "port: expected an integer, got '8001'"),
        ("port = 0", "port: expected a value from 1 to 65535, got 0"),
        ("demo = 1", "demo: expected true or false, got 1"),
        ("max_streams_per_connection = true", "expected an integer, got True"),
        ('channel_grace = "30"', "channel_grace: expected a number, got '30'"),
        ('ib_lib = "ibapi"', "ib_lib: expected one of ib_insync, ib_async, got 'ibapi'"),
        ("port = ", "not valid TOML"),
    ],
)
def test_a_config_value_of_the_wrong_type_is_an_error(env, tmp_path, line, expected):
    config = tmp_path / "ibstream.toml"
    config.write_text(line + "\n")
    assert expected in one_line_error(run("start", "--config", config, env=env), 2)


def test_a_bad_environment_value_is_an_error(env):
    env = {**env, "IBSTREAM_PORT": "eighty"}
    error = one_line_error(run("status", env=env), 2)
    assert "IBSTREAM_PORT: expected an integer, got 'eighty'" in error


def test_command_line_beats_environment_beats_config(ports, env, tmp_path):
    in_config, in_env = ports(), ports()
    config = tmp_path / "ibstream.toml"
    config.write_text(f"port = {in_config}\nchannel_grace = 5\nclient_id = 21\ndemo = true\n")
    env = {**env, "IBSTREAM_PORT": str(in_env), "IBSTREAM_CHANNEL_GRACE": "7"}
    started = run("start", "--config", config, "--channel-grace", 9, env=env)
    assert started.returncode == 0, started.stderr
    assert f"127.0.0.1:{in_env}" in started.stdout and servers_on(in_config) == []
    [server] = servers_on(in_env)
    command = " ".join(server.cmdline())
    assert "--channel-grace 9 " in command  # command line over environment
    assert "--client-id 21 " in command and command.endswith("--demo")  # config over defaults
    assert run("status", "--config", config, env=env).returncode == 0  # environment over config
    assert run("status", "--config", config, "--port", in_config, env=env).returncode == 3
    assert run("stop", "--config", config, env=env).returncode == 0


def test_stale_pid_files_are_removed_and_reported(ports, env):
    port = ports()
    pid_file = daemon.pid_path(port)
    pid_file.parent.mkdir(parents=True)
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    pid_file.write_text(f"{ended.pid}\n")
    status = run("status", "--port", port, env=env)
    assert status.returncode == 3
    assert f"stale pid file for port {port}: pid {ended.pid} no longer runs" in status.stdout
    assert not pid_file.exists()

    pid_file.write_text(f"{os.getpid()}\n")  # a live process, not an ibstream server
    stop = run("stop", "--port", port, env=env)
    assert stop.returncode == 0 and f"pid {os.getpid()} is now another program" in stop.stdout
    assert not pid_file.exists()  # and this test still runs: stop left the process alone

    pid_file.write_text(f"{os.getpid()}\n")
    started = run("start", "--demo", "--port", port, env=env)
    assert started.returncode == 0 and "removed a stale pid file" in started.stdout
    assert int(pid_file.read_text()) == servers_on(port)[0].pid != os.getpid()


def test_a_busy_port_is_a_one_line_error(ports, env):
    port = ports()
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))
        other.listen()
        result = run("start", "--demo", "--port", port, env=env)
    error = one_line_error(result, 1)
    assert f"port {port} on 127.0.0.1 is in use by another program" in error
    assert "not an ibstream server" in error and result.stdout == ""
    assert servers_on(port) == [] and not daemon.pid_path(port).exists()
    state = Path(env["IBSTREAM_STATE_DIR"])
    assert not list(state.glob("server-*.lock"))  # a failed start leaves no lock file
    assert run("start", "--demo", "--port", port, env=env).returncode == 0  # the port is free now
    assert not list(state.glob("server-*.lock"))
    assert run("stop", "--port", port, env=env).returncode == 0


def test_stop_kills_a_server_that_ignores_sigterm(ports, env):
    port = ports()
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(60)"  # fmt: skip
    stuck = subprocess.Popen(
        [sys.executable, "-c", code, "ibstream.cli", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert stuck.stdout.readline() == "1\n"  # SIGTERM is ignored from here on
    log = daemon.default_log(port)
    log.parent.mkdir(parents=True)
    record = daemon.Record(port, stuck.pid, "http://127.0.0.1:1", False, str(log), time.time(), [])
    daemon.write_record(record)
    stop = run("stop", "--port", port, "--timeout", 0.5, env=env)
    assert stop.returncode == 0 and "killed it (SIGKILL)" in stop.stderr
    assert stuck.wait(10) == -signal.SIGKILL
    assert "killed (SIGKILL) 0.5 s after SIGTERM" in log.read_text()


@pytest.mark.parametrize("command", ["", "start", "status", "stop", "logs", "run"])
def test_help(env, command):
    result = run(*command.split(), "--help", env=env)
    assert result.returncode == 0 and result.stdout.startswith("usage: run_server.py")
    text = " ".join(result.stdout.split())  # argparse wraps lines
    assert "IBSTREAM_STATE_DIR" in text
    if command in ("start", "run"):
        assert all(f"config key {key.name})" in text for key in keys())
        assert "(default: 8001; $IBSTREAM_PORT; config key port)" in text
    if command == "logs":
        assert "--follow" in text and "--lines" in text


@pytest.mark.parametrize("form", ["CONFIG", "run --config CONFIG"])
async def test_foreground_forms_serve_until_sigterm(ports, env, tmp_path, form):
    port = ports()
    config = tmp_path / "ibstream.toml"
    config.write_text(f"port = {port}\ndemo = true\n")
    args = form.replace("CONFIG", str(config)).split()
    await assert_serves_then_stops_on_sigterm(sys.executable, str(SCRIPT), *args, port=port)


def test_the_example_config_is_valid_and_names_every_key(env):
    example = SCRIPT.parent / "ibstream.example.toml"
    result = run("status", "--config", example, "--port", free_port(), env=env)
    assert result.returncode == 3, result.stderr  # it parses; no server runs there
    text = example.read_text()
    assert all(re.search(rf"^#? ?{key.name} = ", text, re.M) for key in keys())


def test_without_a_port_status_lists_every_server_and_stop_logs_need_the_only_one(ports, env):
    first, second = ports(), ports()
    for port in (first, second):
        assert run("start", "--demo", "--port", port, env=env).returncode == 0
    pids = {port: int(daemon.pid_path(port).read_text()) for port in (first, second)}

    status = run("status", env=env)
    assert status.returncode == 0, status.stdout
    for port, pid in pids.items():
        line = next(row for row in status.stdout.splitlines() if row.startswith(f"port {port} "))
        assert f"pid {pid}" in line and f"http://127.0.0.1:{port}" in line
        assert "up " in line and "IB: connected" in line

    for command in ("stop", "logs"):  # two run: say which, act on neither
        refused = run(command, env=env)
        assert refused.returncode == 2, (refused.stdout, refused.stderr)
        low, high = sorted((first, second))
        assert f"ports {low}, {high}" in refused.stderr and "--port" in refused.stderr
        assert refused.stdout == ""
    assert all(servers_on(port) for port in (first, second))

    assert run("stop", "--port", first, env=env).returncode == 0
    logs = run("logs", env=env)  # the only one left: its own log, not another port's
    assert logs.returncode == 0 and f"--port {second}" in logs.stdout
    assert f"--port {first}" not in logs.stdout
    stopped = run("stop", env=env)
    assert stopped.returncode == 0 and f"pid {pids[second]}" in stopped.stdout
    assert not servers_on(second)
    none = run("status", env=env)
    assert none.returncode == 3 and "no ibstream server runs" in none.stdout
    assert run("stop", env=env).returncode == 0
    assert run("logs", env=env).returncode == 1
