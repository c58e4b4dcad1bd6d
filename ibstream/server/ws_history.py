"""A WebSocket `history` request: the history service's messages queued on the connection
with the request's id, interleaved with its live messages, never faster than it reads.

Each message waits for room in the connection's queue (`Subscriber.room`: at most half
full) and holds at most half the queue's ticks, so a long history cannot crowd out live
ticks or grow the server's memory past the queue's bound; the
queue's bound and SLOW_CONSUMER hold as for every other send. A `history_cancel` ends it
with a `history_complete` marked `cancelled` (what was sent until then).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ibstream.errors import ErrorCode, StreamError
from ibstream.protocol.encode import error_message, message

if TYPE_CHECKING:
    from ibstream.protocol.validate import ClientMessage
    from ibstream.server.app import ServerContext
    from ibstream.server.subscriber import Subscriber

log = logging.getLogger(__name__)


async def answer(ctx: ServerContext, sub: Subscriber, req: ClientMessage) -> None:
    rid = req.request_id
    assert req.history is not None
    sent = {"ticks": 0, "from_store": 0, "from_ib": 0, "requests": 0}
    most = max(1, sub.queue_size // 2)  # a message never takes more than the room waited for
    try:
        plan = await ctx.history.prepare(req.history)
        async for kind, data in ctx.history.run(plan):
            if kind != "history_ticks":
                sent["requests"] = data.get("requests", sent["requests"])
                await sub.room()
                sub.put(message(kind, data, request_id=rid))
                continue
            ticks = data["ticks"]
            for at in range(0, len(ticks), most):
                part = ticks[at : at + most]
                await sub.room()
                item = message(kind, {"ticks": part.to_dicts()}, request_id=rid)
                item.ticks = len(part)
                sub.put(item)
                sent["ticks"] += len(part)
                sent["from_ib"] += part.count("source", "ib")
                sent["from_store"] = sent["ticks"] - sent["from_ib"]
    except StreamError as exc:
        sub.put(error_message(exc, request_id=rid))
    except asyncio.CancelledError:
        done = {**sent, "missing": [], "cancelled": True}
        sub.put(message("history_complete", done, request_id=rid))
        raise
    except Exception as exc:  # a failure of ours: the client is told, the connection lives
        log.exception("%s: history %r failed", sub.client, rid)
        error = StreamError(ErrorCode.INTERNAL_ERROR, f"history failed ({type(exc).__name__})")
        sub.put(error_message(error, request_id=rid))
