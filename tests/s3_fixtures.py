"""A real S3 endpoint for tests: moto's server (`python -m moto.server`) as a child process on
a free port, with a bucket, and the credentials pyarrow's S3 client needs in the environment.

Test modules wrap `s3_server()` in a fixture of their own (see client_fixtures.py on why).
"""

from __future__ import annotations

import contextlib
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.client_fixtures import WAIT, free_port

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "ibstream-test",
    "AWS_SECRET_ACCESS_KEY": "ibstream-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # host:port
    bucket: str

    def uri(self, prefix: str) -> str:
        """`s3://bucket/prefix` with the endpoint, as `ibstream.store` and pyarrow take it."""
        return f"s3://{self.bucket}/{prefix}?endpoint_override={self.endpoint}&scheme=http"

    def filesystem(self) -> object:
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(endpoint_override=self.endpoint, scheme="http")


@contextlib.contextmanager
def s3_server(bucket: str = "ibstream") -> Iterator[S3Server]:
    """moto's S3 server, listening (its "Running on" line seen), with `bucket` made; stopped
    and reaped on exit."""
    port = free_port()
    with pytest.MonkeyPatch.context() as env:
        for name, value in CREDENTIALS.items():
            env.setenv(name, value)
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        drain = threading.Thread(target=_drain, args=(proc, lines), daemon=True)
        drain.start()
        try:
            _await_listening(lines, port)
            import pyarrow.fs as pafs

            admin = pafs.S3FileSystem(
                endpoint_override=f"127.0.0.1:{port}", scheme="http", allow_bucket_creation=True
            )
            admin.create_dir(bucket)
            yield S3Server(f"127.0.0.1:{port}", bucket)
        finally:
            proc.terminate()
            try:
                proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(WAIT)
            drain.join(WAIT)


def _drain(proc: subprocess.Popen, lines: queue.Queue) -> None:
    """Read the server's log to its end (a full pipe would block it), passing lines on."""
    for line in proc.stderr:
        lines.put(line)
    lines.put("")  # EOF: the server ended


def _await_listening(lines: queue.Queue, port: int) -> None:
    seen = []
    while True:
        try:
            line = lines.get(timeout=WAIT)
        except queue.Empty:
            raise TimeoutError(f"moto's server did not listen within {WAIT} s: {seen}") from None
        if not line:
            raise RuntimeError(f"moto's server ended before listening: {''.join(seen)}")
        seen.append(line)
        if f"Running on http://127.0.0.1:{port}" in line:
            return
