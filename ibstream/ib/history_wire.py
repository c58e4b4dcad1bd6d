"""IB's historical tick messages decoded straight into Arrow columns, for ibstream's requests.

The library decodes every historical tick into objects (a datetime, a tick dataclass, an
attribute record), and ibstream turned those straight back into columns: two thirds of a
history answer's CPU in the server. For the requests ibstream makes
(`api.request_historical_ticks`), the three answers (96 MIDPOINT, 97 BID_ASK, 98 TRADES) are
decoded here instead: one pass per field over the message's strings, the page a table of
`SCHEMAS[what]`. The library still frames the socket's bytes, owns the request and ends its
future (through its wrapper, as its own decoder would); other requests on the connection (a
user's own `reqHistoricalTicks`) get its objects as before. A library whose decoder has no
handler table is left alone (its objects are converted instead).
"""

from __future__ import annotations

import asyncio
import functools
import logging

import numpy as np
import pyarrow as pa

log = logging.getLogger(__name__)

SCHEMAS = {
    "TRADES": pa.schema(
        [("time", pa.int64()), ("price", pa.float64()), ("size", pa.float64()),
         ("exchange", pa.string()), ("conditions", pa.string())]
    ),
    "BID_ASK": pa.schema(
        [("time", pa.int64()), ("bid", pa.float64()), ("ask", pa.float64()),
         ("bid_size", pa.float64()), ("ask_size", pa.float64())]
    ),
    "MIDPOINT": pa.schema([("time", pa.int64()), ("mid", pa.float64())]),
}  # fmt: skip
# per message id: the kind, the library's wrapper method, the fields of a tick, and the
# field (after IB's time) of each schema column: all tick fields are (time, mask or unused,
# then the kind's values)
MESSAGES = {
    96: ("MIDPOINT", "historicalTicks", 4, (2,)),
    97: ("BID_ASK", "historicalTicksBidAsk", 6, (2, 3, 4, 5)),
    98: ("TRADES", "historicalTicksLast", 6, (2, 3, 4, 5)),
}


def decode(fields: list[str]) -> tuple[int, pa.Table, bool]:
    """One historical ticks message (its fields, the message id first) as (request id,
    table of the kind's schema, IB's done flag). Malformed: ValueError or IndexError."""
    what, _, width, places = MESSAGES[int(fields[0])]
    n = int(fields[2])
    end = 3 + n * width
    body = fields[3:end]
    if len(body) != n * width:
        raise IndexError(f"{n} ticks announced, {len(body) // width} sent")
    done = bool(int(fields[end]))
    schema = SCHEMAS[what]
    arrays = [pa.array(np.fromiter(map(int, body[0::width]), np.int64, n))]
    for place, column in zip(places, list(schema)[1:], strict=True):
        values = body[place::width]
        if pa.types.is_string(column.type):
            arrays.append(pa.array(values, pa.string()))
        else:
            arrays.append(pa.array(np.fromiter(map(float, values), np.float64, n)))
    return int(fields[1]), pa.Table.from_arrays(arrays, schema=schema), done


class ColumnPages:
    """A connection's decoder hook: the request ids whose answers come as tables."""

    def __init__(self, decoder: object) -> None:
        self.decoder = decoder
        self.requests: set[int] = set()
        handlers: dict = decoder.handlers  # type: ignore[attr-defined]
        self.originals = {msg_id: handlers[msg_id] for msg_id in MESSAGES}
        for msg_id in MESSAGES:
            handlers[msg_id] = functools.partial(self._handle, msg_id)

    def watch(self, req_id: int, future: asyncio.Future) -> None:
        """Answer `req_id` with tables until its future ends (done, error or cancel)."""
        self.requests.add(req_id)
        future.add_done_callback(lambda _: self.requests.discard(req_id))

    def _handle(self, msg_id: int, fields: list[str]) -> None:
        if int(fields[1]) not in self.requests:
            self.originals[msg_id](fields)
            return
        try:
            req_id, table, done = decode(fields)
        except (ValueError, IndexError):  # the library's decoder logs what it makes of it
            self.originals[msg_id](fields)
            return
        method = getattr(self.decoder.wrapper, MESSAGES[msg_id][1])  # type: ignore[attr-defined]
        method(req_id, [table], done)


def column_pages(ib: object) -> ColumnPages | None:
    """The connection's hook, installed on first use (None: the library has no handler
    table for these messages)."""
    decoder = getattr(getattr(ib, "client", None), "decoder", None)
    hook = getattr(decoder, "_ibstream_column_pages", None)
    if hook is not None or decoder is None:
        return hook
    handlers = getattr(decoder, "handlers", None)
    if not isinstance(handlers, dict) or not all(m in handlers for m in MESSAGES):
        log.debug("%s decodes historical ticks as objects", type(ib).__module__)
        return None
    hook = ColumnPages(decoder)
    decoder._ibstream_column_pages = hook  # type: ignore[attr-defined]
    return hook
