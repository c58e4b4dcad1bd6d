"""The recorder's crash marker: one small JSON file per recording server run, rewritten after
every flush and removed at a clean stop. A marker left behind by a process that is gone
means that run crashed: what it had not flushed is lost, and the next run on the same store
writes that window into `gaps` (reason `server_restarted`).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field

import orjson
import psutil

from ibstream.store import layout

log = logging.getLogger(__name__)
PREFIX = "recorder-"
# A marker of another host cannot be checked by pid: it counts as crashed once it has not
# been rewritten for this long (its server flushes every few seconds at most).
FOREIGN_STALE_SECONDS = 120.0


@dataclass
class StreamMark:
    contract_id: int
    tick_type: str
    last_ns: int | None = None  # receive time of the last tick on disk
    last_sequence: int | None = None
    open: bool = True  # the hub still holds the stream


@dataclass
class RunMarker:
    server_id: str
    started_ns: int
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    flushed_ns: int = 0
    streams: dict[str, StreamMark] = field(default_factory=dict)

    def to_json(self) -> bytes:
        body = {
            "server_id": self.server_id,
            "started_ns": self.started_ns,
            "host": self.host,
            "pid": self.pid,
            "flushed_ns": self.flushed_ns,
            "streams": [vars(mark) for mark in self.streams.values()],
        }
        return orjson.dumps(body)

    @staticmethod
    def from_json(raw: bytes) -> RunMarker:
        body = orjson.loads(raw)
        marker = RunMarker(
            body["server_id"], body["started_ns"], body["host"], body["pid"], body["flushed_ns"]
        )
        for item in body.get("streams", []):
            mark = StreamMark(**item)
            marker.streams[f"{mark.contract_id}:{mark.tick_type}"] = mark
        return marker

    def path(self, root: layout.StoreRoot) -> str:
        return root.path(layout.STATE, f"{PREFIX}{self.server_id}.json")

    def is_alive(self) -> bool:
        """Is the run that wrote this marker still recording?"""
        if self.host != socket.gethostname():
            return time.time_ns() - self.flushed_ns < FOREIGN_STALE_SECONDS * 1e9
        if self.pid == os.getpid():
            return True
        try:
            return psutil.pid_exists(self.pid) and psutil.Process(self.pid).is_running()
        except psutil.Error:
            return False


def save(root: layout.StoreRoot, marker: RunMarker) -> None:
    """Replace the marker atomically (aside, then rename; one upload on object stores)."""
    layout.write_small(root, marker.path(root), marker.to_json())


def remove(root: layout.StoreRoot, marker: RunMarker) -> None:
    root.fs.delete_file(marker.path(root))


def crashed_runs(root: layout.StoreRoot) -> list[RunMarker]:
    """Markers of runs that ended without a clean stop (their process is gone)."""
    found = []
    for path, raw in layout.state_files(root, PREFIX):
        try:
            marker = RunMarker.from_json(raw)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable recorder marker %s (%s)", path, exc)
            continue
        if not marker.is_alive():
            found.append(marker)
    return found
