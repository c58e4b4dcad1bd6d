"""The bench's child processes: each speaks JSON lines on stdin / stdout.

Every child prints one line when it is ready (or why it failed) and exits when its stdin
closes; `Child.stop` closes stdin, and only a child that does not exit in time is killed.
What a child writes to stderr (warnings, tracebacks) is kept apart from the table and
summed up when it stops: each distinct line once, with how often it came.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from asyncio.subprocess import PIPE
from collections import Counter
from typing import IO

import orjson

LINE_LIMIT = 1 << 28  # latency records come as one long line


class Child:
    """One `python -m bench.<module>` process."""

    def __init__(
        self, module: str, proc: asyncio.subprocess.Process, stderr: IO[bytes], first: bytes
    ) -> None:
        self.module, self.proc, self.stderr, self.first = module, proc, stderr, first

    @classmethod
    async def start(cls, module: str, *args: object, timeout: float = 30.0) -> Child:
        stderr = tempfile.TemporaryFile()
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", module, *map(str, args)),
            stdin=PIPE,
            stdout=PIPE,
            stderr=stderr,
            limit=LINE_LIMIT,
        )
        try:
            first = await asyncio.wait_for(proc.stdout.readline(), timeout)
        except TimeoutError:
            first = b""
        child = cls(module, proc, stderr, first)
        if not first or b"failed" in first:
            await child.stop()
            raise RuntimeError(f"{module} did not start: {first.decode().strip() or 'no answer'}")
        return child

    def ready(self) -> dict:
        return orjson.loads(self.first)

    async def ask(self, command: str, timeout: float = 30.0) -> dict:
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"child process exited ({self.proc.returncode})")
        return orjson.loads(line)

    async def stop(self, timeout: float = 10.0) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        if summary := stderr_summary(self.stderr):
            print(f"  ({self.module} wrote to stderr: {summary})", flush=True)


def run_note(started: float, load: float) -> str:
    """How long a bench ran (`started`: time.monotonic()) and the load average before
    (`load`) and now: a busy machine explains a weak figure."""
    return (
        f"\n(the run took {time.monotonic() - started:.0f} s; load average {load:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after: above the core count, other work shared the CPU)"
    )


def stderr_summary(stderr: IO[bytes], shown: int = 3) -> str:
    """The most frequent distinct lines of a child's stderr, with their counts."""
    stderr.seek(0)
    lines = Counter(line.strip() for line in stderr.read().decode(errors="replace").splitlines())
    stderr.close()
    lines.pop("", None)
    return "; ".join(f"{text!r} x{n}" for text, n in lines.most_common(shown))


class Consumer:
    """What a rate search measures: per-consumer tick counts so far, and how many closed."""

    def __init__(self, module: str, *args: object) -> None:
        self.module, self.args = module, args
        self.child: Child | None = None
        self.restarts = 0

    async def start(self) -> None:
        self.child = await Child.start(self.module, *self.args, *self.extra())

    def extra(self) -> tuple[object, ...]:
        return ()

    async def counts(self) -> tuple[list[int], int]:
        answer = await self.child.ask("report")
        if "count" in answer:
            return [answer["count"]], 0
        return answer["counts"], answer["closed"]

    async def restart(self) -> None:
        await self.stop()
        self.restarts += 1
        await self.start()

    async def stop(self) -> None:
        if self.child is not None:
            await self.child.stop()
            self.child = None


class IbConsumer(Consumer):
    """ib_insync alone; a restart takes a new client id (the old one may not be free yet)."""

    def __init__(self, ib_port: int, client_id: int, con_id: int) -> None:
        super().__init__("bench.ib_counter", ib_port)
        self.client_id, self.con_id = client_id, con_id

    def extra(self) -> tuple[object, ...]:
        return self.client_id + self.restarts, self.con_id
