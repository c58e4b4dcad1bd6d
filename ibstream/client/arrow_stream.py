"""One Arrow IPC stream read as its bytes arrive (a `format=arrow` history answer).

pyarrow's stream reader pulls from a file and blocks for what is not there yet, which an
asyncio client cannot let it do. `ArrowStreamParser.feed` takes the bytes of each network
chunk, frames whole IPC messages (`pa.ipc.read_message` on what has arrived: a message
cut short is simply tried again with the next chunk) and hands only whole messages to one
ordinary `RecordBatchStreamReader`, which therefore never waits and keeps the stream's
dictionaries (and their replacements) as the format defines them. Each record batch comes
out with its custom metadata as soon as its last byte is in.
"""

from __future__ import annotations

import io
import struct

import pyarrow as pa

CONTINUATION = b"\xff\xff\xff\xff"


class _Framed(io.RawIOBase):
    """The whole messages framed so far, read by the reader exactly as far as they go."""

    def __init__(self) -> None:
        self._data = bytearray()

    def readable(self) -> bool:
        return True

    def add(self, message: bytes) -> None:
        self._data += message

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), len(self._data))
        buffer[:n] = self._data[:n]
        del self._data[:n]
        return n


class ArrowStreamParser:
    """Feed bytes in order; get (record batch, custom metadata as str -> str) pairs out."""

    def __init__(self) -> None:
        self._pending = bytearray()  # bytes not yet framed into a whole message
        self._framed = _Framed()
        self._reader: pa.RecordBatchStreamReader | None = None
        self.schema: pa.Schema | None = None
        self.ended = False  # the end-of-stream marker arrived

    def feed(self, chunk: bytes) -> list[tuple[pa.RecordBatch, dict[str, str]]]:
        if self.ended:
            if chunk.strip(b"\x00"):
                raise ValueError("bytes after the end of the Arrow stream")
            return []
        self._pending += chunk
        out = []
        while not self.ended:
            kind = self._frame_one()
            if kind is None:
                break
            if kind == "record batch":
                out.append(self._next_batch())
        return out

    def _frame_one(self) -> str | None:
        """Move one whole message from `_pending` to the reader's source; its type, or None
        while it is incomplete."""
        pending = self._pending
        if len(pending) < 8:
            return None
        if pending[:4] == CONTINUATION and struct.unpack_from("<i", pending, 4)[0] == 0:
            self.ended = True
            del pending[:8]
            return None
        source = pa.BufferReader(bytes(pending))
        try:
            message = pa.ipc.read_message(source)
        except (pa.ArrowInvalid, EOFError, OSError):
            return None  # cut short: more bytes to come (`finish` tells a truncated stream)
        size = source.tell()
        self._framed.add(bytes(pending[:size]))
        del pending[:size]
        if message.type == "schema":
            self.schema = pa.ipc.read_schema(message)
        return message.type

    def _next_batch(self) -> tuple[pa.RecordBatch, dict[str, str]]:
        if self._reader is None:
            self._reader = pa.ipc.open_stream(self._framed)
        batch, metadata = self._reader.read_next_batch_with_custom_metadata()
        return batch, {k.decode(): v.decode() for k, v in (metadata or {}).items()}

    def finish(self) -> None:
        """The bytes ended: ValueError unless they ended where a message did."""
        if self._pending:
            raise ValueError(
                f"the Arrow stream ended inside a message ({len(self._pending)} bytes)"
            )
