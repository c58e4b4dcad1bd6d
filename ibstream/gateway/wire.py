"""TWS API socket framing: field encoding, the handshake and length-prefixed messages.

After the client's `API\\0` greeting every message in both directions is a 4-byte
big-endian length followed by NUL-terminated text fields, the first being the message id.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

API_SIGN = b"API\0"
MAX_MESSAGE = 16 * 1024 * 1024  # TWS rejects anything this large as well
_VERSION_RE = re.compile(r"^v(\d+)(?:\.\.(\d+))?(?:\s+(.*))?$")


class ProtocolError(Exception):
    """The peer sent bytes that are not the TWS API protocol."""


def fmt(value: object) -> str:
    """One field as TWS writes it: whole floats without `.0`, bools as 1/0, None empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def encode(*fields: object) -> bytes:
    """A complete length-prefixed message of the given fields."""
    body = "".join(fmt(f) + "\0" for f in fields).encode()
    return struct.pack(">I", len(body)) + body


@dataclass(frozen=True, slots=True)
class VersionRange:
    """What the client offered in its handshake, e.g. `v157..176 +PACEAPI`."""

    min_version: int
    max_version: int
    options: str = ""


def parse_version_range(text: str) -> VersionRange:
    match = _VERSION_RE.match(text.strip())
    if not match:
        raise ProtocolError(f"bad version handshake {text!r}")
    low = int(match.group(1))
    high = int(match.group(2) or low)
    return VersionRange(low, high, match.group(3) or "")


class FrameDecoder:
    """Incremental decoder: feed bytes, get whole messages back.

    With `expect_handshake` the stream must open with `API\\0`; the first framed message
    is then the version range and is returned from `feed` as a one-field message.
    """

    def __init__(self, expect_handshake: bool = True) -> None:
        self._buf = bytearray()
        self._need_sign = expect_handshake

    def feed(self, data: bytes) -> list[list[str]]:
        self._buf += data
        out: list[list[str]] = []
        if self._need_sign:
            if len(self._buf) < len(API_SIGN):
                if not API_SIGN.startswith(bytes(self._buf)):
                    raise ProtocolError("missing API greeting")
                return out
            if not self._buf.startswith(API_SIGN):
                raise ProtocolError("missing API greeting")
            del self._buf[: len(API_SIGN)]
            self._need_sign = False
        buf = self._buf
        pos = 0
        while len(buf) - pos >= 4:
            (size,) = struct.unpack_from(">I", buf, pos)
            if size > MAX_MESSAGE:
                raise ProtocolError(f"message of {size} bytes is too large")
            end = pos + 4 + size
            if len(buf) < end:
                break
            text = buf[pos + 4 : end].decode(errors="backslashreplace")
            fields = text.split("\0")
            if fields and fields[-1] == "":
                fields.pop()
            out.append(fields)
            pos = end
        if pos:
            del buf[:pos]
        return out
