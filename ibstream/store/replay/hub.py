"""`ReplayHub`: the live hub's counterpart for a recording, behind the very same server.

The server's subscribers talk to it exactly as to `ibstream.server.hub.Hub` (`resolve`,
`attach` / `detach`, `last_sequence`, `replay` for resume, `drop_unused`, `stats`, `close`,
`server_id`, `source`), so SSE, WebSocket, limits, batching and resume work unchanged.
Where the live hub fans one upstream stream out, each subscribe here gets its own
`Session`: the handles one subscribe attaches (one owner, one task step: a subscribe
attaches all its streams, asks `last_sequence` and `replay` without awaiting in between)
are grouped and replayed together from the start, on their own clock, so a client that
connects late still gets the whole session. The session starts on the loop's next turn,
after `subscribed` is queued.

Sequences and receive stamps are the recorded ones, so `server_id` names the recording,
not the run: a client may resume against a replay server restarted on the same recording.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from typing import TYPE_CHECKING

from ibstream.errors import ErrorCode, StreamError
from ibstream.model import ContractInfo, TickType
from ibstream.protocol.times import iso_ns
from ibstream.server.hub import unknown_sequence
from ibstream.store.replay.recording import Recording
from ibstream.store.replay.session import Session

if TYPE_CHECKING:
    from ibstream.server.stream import StreamHandle


class ReplaySource:
    """What the status endpoints ask of a source (`/health`, `/v2/contracts`)."""

    available = True

    def __init__(self, hub: ReplayHub):
        self.hub = hub

    def status(self) -> dict:
        hub = self.hub
        return {
            "connected": True,
            "host": hub.recording.uri,
            "port": 0,
            "client_id": 0,
            "library": "replay",
            "ib_link_lost": False,
            "reconnects": 0,
            "upstream_subscriptions": [
                {"contract_id": c, "tick_type": t.value} for c, t in sorted(hub.channels)
            ],
            "replay": {
                "recording": hub.recording.uri,
                "speed": "max" if hub.speed is None else hub.speed,
                "start": iso_ns(hub.start_ns),
                "end": None if hub.end_ns is None else iso_ns(hub.end_ns),
                "loop": hub.loop,
                "contracts": [c.to_dict() for c in hub.recording.contracts.values()],
            },
        }

    async def search(self, symbol: str) -> list[ContractInfo]:
        return self.hub.recording.search(symbol)

    async def stop(self) -> None:
        self.hub.close()


class ReplayHub:
    """Serves a recording: one `Session` per subscribe (see the module's docstring)."""

    def __init__(
        self,
        recording: Recording,
        *,
        speed: float | None = 1.0,
        start_ns: int | None = None,
        end_ns: int | None = None,
        loop: bool = False,
    ):
        if speed is not None and not (isinstance(speed, int | float) and 0 < speed < math.inf):
            raise ValueError(
                f"speed must be a number above 0 or None (as fast as possible), not {speed!r}"
            )
        if start_ns is not None and end_ns is not None and start_ns >= end_ns:
            raise ValueError(f"start ({iso_ns(start_ns)}) must be before end ({iso_ns(end_ns)})")
        self.recording = recording
        self.speed = speed
        self.start_ns = recording.first_ns if start_ns is None else start_ns
        self.end_ns = end_ns
        self.loop = loop
        digest = hashlib.sha256(recording.uri.encode()).hexdigest()[:16]
        self.server_id = f"replay-{digest}"  # the recorded sequences stay valid across runs
        self.source = ReplaySource(self)
        self.sessions: set[Session] = set()
        self._of: dict[StreamHandle, Session] = {}
        self._pending: dict[tuple[int, int, int], Session] = {}
        self.ticks_out = 0
        self.closed = False

    async def resolve(self, spec: str | int) -> ContractInfo:
        return self.recording.resolve(spec)

    def attach(self, handle: StreamHandle) -> None:
        """Join the session of this subscribe (made on its first stream, started next turn)."""
        if not handle.active:
            return
        if self.closed:
            raise StreamError(ErrorCode.CONNECTION_ERROR, "the replay server is stopping")
        start = self.start_ns if handle.start_ns is None else handle.start_ns
        if self.end_ns is not None and start >= self.end_ns:
            raise StreamError(
                ErrorCode.INVALID_MESSAGE,
                f"start {iso_ns(start)} is not before this replay's end {iso_ns(self.end_ns)}",
                details={"field": "start", "expected": f"before {iso_ns(self.end_ns)}"},
            )
        pending = (id(asyncio.current_task()), id(handle.owner), start)
        session = self._pending.get(pending)
        if session is None or session.contract != handle.contract:
            session = Session(self, handle.owner, handle.contract, start)
            self._pending[pending] = session
            self.sessions.add(session)
            asyncio.get_running_loop().call_soon(self._launch, pending, session)
        session.add(handle)
        self._of[handle] = session

    def _launch(self, pending: tuple[int, int, int], session: Session) -> None:
        if self._pending.get(pending) is session:
            del self._pending[pending]
        if session.active and not self.closed:
            session.launch()
        else:
            self.ended(session)

    def _subscribing(self, contract_id: int, tick_type: TickType) -> Session | None:
        """The session the current task is subscribing with that stream, if any."""
        task = id(asyncio.current_task())
        for (owner_task, _, _), session in reversed(self._pending.items()):
            if owner_task == task and session.contract.contract_id == contract_id:
                if tick_type in session.handles:
                    return session
        return None

    def last_sequence(self, contract_id: int, tick_type: TickType) -> int:
        """Where a stream being subscribed starts: the sequence before its first tick."""
        session = self._subscribing(contract_id, tick_type)
        if session is None:
            return self.recording.last_sequence((contract_id, tick_type))
        return session.before[tick_type]

    def replay(self, key: tuple[int, TickType], after: int) -> tuple[list, list[dict]]:
        """A resume: the session being subscribed continues after `after` (nothing is
        buffered to hand back: the session reads it from the recording)."""
        session = self._subscribing(*key)
        if session is None:
            return [], []
        last = self.recording.last_sequence(key)
        if after > last:
            return [], [
                unknown_sequence(after, last, "in this recording; replaying from the start")
            ]
        session.resume[key[1]] = after
        return [], []

    def detach(self, handle: StreamHandle) -> None:
        session = self._of.pop(handle, None)
        if session is not None and not session.active and not session.finishing:
            session.stop()

    def drop_unused(self, handle: StreamHandle) -> None:
        self.detach(handle)

    def ended(self, session: Session) -> None:
        self.sessions.discard(session)
        for handle in [h for h, s in self._of.items() if s is session]:
            del self._of[handle]

    def close(self) -> None:
        self.closed = True
        for session in list(self.sessions):
            session.stop()

    @property
    def channels(self) -> dict[tuple[int, TickType], int]:
        """Streams being replayed and to how many clients (the live hub's upstream count)."""
        out: dict[tuple[int, TickType], int] = {}
        for handle in self._of:
            if handle.active:
                key = (handle.contract.contract_id, handle.tick_type)
                out[key] = out.get(key, 0) + 1
        return out

    def stats(self) -> dict:
        return {
            "server_id": self.server_id,
            "mode": "replay",
            "recording": self.recording.uri,
            "speed": "max" if self.speed is None else self.speed,
            "upstream_streams": len(self.channels),
            "ticks_out": self.ticks_out,
            "sessions": [session.describe() for session in self.sessions],
        }
