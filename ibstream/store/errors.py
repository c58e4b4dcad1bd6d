"""What goes wrong reading or compacting a store: one error type with a code a program can
branch on and a message a person can act on, and the warning for a part that cannot be read."""

from __future__ import annotations


class StoreError(ValueError):
    """A store that cannot be read as asked: `code` (e.g. NOT_A_RECORDING) and `message`."""

    def __init__(self, code: str, message: str, **details: object) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.details = code, message, details


class CorruptPartWarning(UserWarning):
    """A part file that is not readable Parquet: skipped, named in the message."""
