"""The shared secret's environment variable, read one way by the server, the background
server and the client (so `IBSTREAM_TOKEN=...` configures both ends)."""

from __future__ import annotations

import os
from collections.abc import Mapping

TOKEN_ENV = "IBSTREAM_TOKEN"


def token_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """`$IBSTREAM_TOKEN` (surrounding blanks dropped), or None when unset or empty."""
    value = (os.environ if environ is None else environ).get(TOKEN_ENV, "").strip()
    return value or None
