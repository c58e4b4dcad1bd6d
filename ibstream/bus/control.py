"""The source's answers on `ibstream.control.*` (core NATS request / reply).

Edges ask the one process connected to IB to look contracts up and to hold streams upstream
(see `holds.py`); the source answers in the queue group `ibstream-source`. Every request is
validated first (`control_requests.py`): a malformed one gets `{"error": ...}` with
INVALID_MESSAGE naming the field and is logged, never raised into the subscription. Each
request runs as its own task (a contract lookup waits on IB), at most `MAX_RUNNING` at once;
past that the answer is RATE_LIMIT_EXCEEDED.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from ibstream.bus import control_requests as rq
from ibstream.bus import wire
from ibstream.bus.holds import Holds
from ibstream.errors import ErrorCode, StreamError

if TYPE_CHECKING:
    from ibstream.server.hub import Hub

log = logging.getLogger(__name__)
QUEUE = "ibstream-source"
MAX_RUNNING = 64


class ControlResponder:
    """Subscribes on every (re)connection; answers resolve, search, hold, release, status."""

    def __init__(self, hub: Hub, holds: Holds, status: object):
        self.hub = hub
        self.holds = holds
        self.status = status  # () -> the source's bus status, for `status`
        self.answered = 0
        self.refused = 0
        self._tasks: set[asyncio.Task] = set()

    async def subscribe(self, nc: NATS, _js: object = None) -> None:
        for action in rq.MODELS:
            await nc.subscribe(wire.control_subject(action), queue=QUEUE, cb=self._on_request)

    async def _on_request(self, msg: Msg) -> None:
        if len(self._tasks) >= MAX_RUNNING:
            error = StreamError(
                ErrorCode.RATE_LIMIT_EXCEEDED,
                f"the source is answering {MAX_RUNNING} control requests already; ask again",
            )
            await self._reply(msg, {"error": error.body()})
            return
        task = asyncio.create_task(self._answer(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, msg: Msg) -> None:
        action = msg.subject.rpartition(".")[2]
        try:
            request = rq.parse(action, msg.data)
            body = {"ok": await self._run(request)}
            self.answered += 1
        except StreamError as exc:
            self.refused += 1
            if exc.code == ErrorCode.INVALID_MESSAGE:
                log.warning("bus: control %s refused: %s", action, exc.message)
            body = {"error": exc.body()}
        except Exception as exc:  # a bug must not end the responder: say so, answer
            log.exception("bus: control %s failed", action)
            body = {"error": StreamError(ErrorCode.INTERNAL_ERROR, repr(exc)).body()}
        await self._reply(msg, body)

    async def _run(self, request: rq.ControlRequest) -> dict:
        hub = self.hub
        if isinstance(request, rq.Resolve):
            return {"contract": (await hub.resolve(request.spec)).to_dict()}
        if isinstance(request, rq.Search):
            found = await hub.source.search(request.symbol)
            return {"contracts": [c.to_dict() for c in found]}
        if isinstance(request, rq.Hold):
            contract = await hub.resolve(request.contract_id)
            last = self.holds.hold(
                request.holder, contract, request.tick_type, request.lease_seconds
            )
            return {"server_id": hub.server_id, "last_sequence": last}
        if isinstance(request, rq.Release):
            self.holds.release(request.holder, request.contract_id, request.tick_type)
            return {}
        return {
            "server_id": hub.server_id,
            "source": hub.source.status(),
            "hub": hub.stats(),
            "bus": self.status(),  # type: ignore[operator]
        }

    async def _reply(self, msg: Msg, body: dict) -> None:
        if not msg.reply:
            log.warning("bus: a control request on %s without a reply subject", msg.subject)
            return
        with contextlib.suppress(Exception):  # the connection went: the requester retries
            await msg.respond(orjson.dumps(body))

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.holds.close()
