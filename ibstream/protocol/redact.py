"""Keep secrets out of logs: at debug level the websockets library logs every handshake's
request line and headers (Authorization included), on the server and on the client."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable


class RedactSecrets(logging.Filter):
    """Masks `token=...` and `Authorization:` values in a log record."""

    PATTERN = re.compile(r"(?i)(token=)[^&\s\"']+|(authorization:\s*).+")

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "token=" in text.lower() or "authorization:" in text.lower():
            record.msg, record.args = self.PATTERN.sub(_mask, text), ()
        return True


def _mask(match: re.Match[str]) -> str:
    return (match.group(1) or match.group(2)) + "***"


_REDACT = RedactSecrets()


def redact_logs(names: Iterable[str]) -> None:
    """Install the masking filter on these loggers (once each)."""
    for name in names:
        logger = logging.getLogger(name)
        if _REDACT not in logger.filters:
            logger.addFilter(_REDACT)
