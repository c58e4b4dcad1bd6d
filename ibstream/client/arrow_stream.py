"""One Arrow IPC stream read as its bytes arrive (a `format=arrow` history answer).

pyarrow's stream reader pulls from a file and blocks for what is not there yet, which an
asyncio client cannot let it do. `ArrowStreamParser.feed` takes the bytes of each network
chunk, frames whole IPC messages (each message's size read from its metadata, then
`pa.ipc.read_message` once all of it is in, so a large batch is not copied again for
every chunk of it) and hands only whole messages to one
ordinary `RecordBatchStreamReader`, which therefore never waits and keeps the stream's
dictionaries (and their replacements) as the format defines them. Each record batch comes
out with its custom metadata as soon as its last byte is in.
"""

from __future__ import annotations

import io
import struct

import pyarrow as pa

from ibstream.protocol.arrow import IPC_MARK


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


def message_size(data: bytearray) -> int | None:
    """Bytes of the IPC message at the start of `data` (continuation, length, metadata,
    body), from the `bodyLength` of its flatbuffer `Message`; None until the metadata is in
    (or where it is not the format's current framing: then pyarrow decides)."""
    if len(data) < 8 or data[:4] != IPC_MARK:
        return None
    length = struct.unpack_from("<i", data, 4)[0]
    if length <= 0 or len(data) < 8 + length:
        return None
    table = 8 + struct.unpack_from("<I", data, 8)[0]
    vtable = table - struct.unpack_from("<i", data, table)[0]
    slot = vtable + 4 + 2 * 3  # field 3 of Message: bodyLength (version, header type, header)
    size = struct.unpack_from("<H", data, vtable)[0]
    offset = struct.unpack_from("<H", data, slot)[0] if slot + 2 <= vtable + size else 0
    body = struct.unpack_from("<q", data, table + offset)[0] if offset else 0
    return 8 + length + body


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
        if pending[:4] == IPC_MARK and struct.unpack_from("<i", pending, 4)[0] == 0:
            self.ended = True
            del pending[:8]
            return None
        whole = message_size(pending)
        if whole is not None and len(pending) < whole:
            return None  # its body is still on the way: no copy until it is all here
        source = pa.BufferReader(bytes(pending[: whole or len(pending)]))
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
            # one batch at a time as it arrives: no thread pool to hand a small one to
            options = pa.ipc.IpcReadOptions(use_threads=False)
            self._reader = pa.ipc.open_stream(self._framed, options=options)
        batch, metadata = self._reader.read_next_batch_with_custom_metadata()
        return batch, {k.decode(): v.decode() for k, v in (metadata or {}).items()}

    def finish(self) -> None:
        """The bytes ended: ValueError unless they ended where a message did."""
        if self._pending:
            raise ValueError(
                f"the Arrow stream ended inside a message ({len(self._pending)} bytes)"
            )
