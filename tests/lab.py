"""JupyterLab and a headless chromium for the browser tests.

`running_lab` starts JupyterLab on 127.0.0.1 and a free port over a directory, with its own
token and its own Jupyter config, data, runtime and IPython directories under a state
directory (so nothing of the user's Jupyter setup, nor of the repository, is read or
changed), and shuts it down with every process it started. `launch_chromium` drives
Debian's chromium (apt) through the PyPI playwright package: no browser is downloaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from tests.client_fixtures import free_port

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
START_TIMEOUT = 90.0  # seconds JupyterLab may take to answer (cold start on a busy machine)

# JupyterLab user settings: render every cell (no windowing, so off-screen outputs stay in
# the page), start the notebook's kernel without a picker dialog (one that showed after the
# kernel looked idle once covered the page), and no news or update checks (no network, no
# toast over the screenshot).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": {
        "windowingMode": "none",
        "autoStartDefaultKernel": True,
    },
    "@jupyterlab/apputils-extension/notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


def chromium_path() -> str:
    """Debian's chromium: the browser test needs it, and fails (never skips) without it."""
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "chromium is not installed: apt-get install -y chromium (.ci/run does this), "
            "or leave the browser test out with: pytest -m 'not browser'"
        )
    return path


@dataclass
class Lab:
    """A running JupyterLab: its base `url`, `token` and server log."""

    url: str
    token: str
    log_file: Path

    def page_url(self, path: str) -> str:
        """The URL of a JupyterLab page (e.g. `lab/tree/x.ipynb`), logging in by token."""
        return f"{self.url}/{path}?token={self.token}"

    def api(self, method: str, path: str, timeout: float = 5.0) -> httpx.Response:
        headers = {"Authorization": f"token {self.token}"}
        with httpx.Client(timeout=timeout, trust_env=False) as http:
            return http.request(method, f"{self.url}/api/{path}", headers=headers)


@contextlib.contextmanager
def running_lab(root: Path, state: Path, env: Mapping[str, str] | None = None) -> Iterator[Lab]:
    """JupyterLab serving `root`, its kernels started with `env` added to this process's
    environment; on exit the server is shut down through its API, then every process it
    started that is still there is killed."""
    port, token = free_port(), secrets.token_hex(16)
    names = ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR")
    dirs = {name: state / name.lower() for name in names}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    write_settings(dirs["JUPYTER_CONFIG_DIR"] / "lab" / "user-settings")
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--port-retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",  # asks no package index
    ]
    if os.geteuid() == 0:  # CI containers run as root
        command.append("--allow-root")
    log_file = state / "jupyterlab.log"
    environment = {**os.environ, **{k: str(v) for k, v in dirs.items()}, **(env or {})}
    with open(log_file, "ab") as sink:
        process = subprocess.Popen(
            command,
            cwd=root,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    lab = Lab(f"http://127.0.0.1:{port}", token, log_file)
    try:
        wait_until_up(lab, process)
        yield lab
    finally:
        shut_down(lab, process)


def write_settings(user_settings: Path) -> None:
    for plugin, values in LAB_SETTINGS.items():
        package, name = plugin.rsplit("/", 1)
        path = user_settings / package / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def wait_until_up(lab: Lab, process: subprocess.Popen) -> None:
    """Poll /api/status until it answers; fail with the log's end if the process exits or
    time runs out."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if lab.api("GET", "status").status_code == 200:
                return
        if process.poll() is not None or time.monotonic() > deadline:
            what = f"exited with {process.returncode}" if process.poll() is not None else "hung"
            pytest.fail(f"JupyterLab {what}; its log ends with:\n{log_tail(lab.log_file)}")
        time.sleep(0.2)


def shut_down(lab: Lab, process: subprocess.Popen) -> None:
    """POST /api/shutdown (stops the kernels too), then kill what is left of the processes
    JupyterLab started, by pid."""
    started: list[psutil.Process] = []
    with contextlib.suppress(psutil.Error):
        started = psutil.Process(process.pid).children(recursive=True)
    if process.poll() is None:
        with contextlib.suppress(httpx.HTTPError):
            lab.api("POST", "shutdown")
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    for child in started:
        with contextlib.suppress(psutil.Error):
            if child.is_running():
                child.kill()
                child.wait(10)


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(cannot read {path}: {exc})"


@contextlib.contextmanager
def launch_chromium(executable: str | None = None) -> Iterator[object]:
    """A headless Debian chromium (default `chromium_path()`) through playwright's sync API:
    yields a playwright `Browser`."""
    from playwright.sync_api import sync_playwright

    executable = executable or chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()
