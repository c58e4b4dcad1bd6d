"""The edge's side of `ibstream.control.*`: asking the source (over core NATS request /
reply) to resolve and search contracts and to hold or release a stream upstream.

Every reply is checked before it is used: a reply that is not the protocol's (`{"ok": ...}`
or `{"error": StreamError.body()}`) is an INTERNAL_ERROR naming what was wrong, never a
crash. A source that does not answer (nobody listening, or no reply in time) is a
recoverable CONNECTION_ERROR that says so, so clients retry rather than give up.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import orjson

from ibstream.bus import wire
from ibstream.errors import ErrorCode, StreamError, error_from_body
from ibstream.model import ContractInfo, TickType

log = logging.getLogger(__name__)
_CONTRACT_FIELDS = {f.name for f in dataclasses.fields(ContractInfo)}


def contract_from(value: object) -> ContractInfo:
    """A `ContractInfo.to_dict()` from the bus back; ValueError when it is not one."""
    if not isinstance(value, dict) or not isinstance(value.get("contract_id"), int):
        raise ValueError(f"not a contract: {str(value)[:120]}")
    known = {k: v for k, v in value.items() if k in _CONTRACT_FIELDS}
    known.setdefault("symbol", str(value["contract_id"]))
    for name in ("sec_type", "exchange", "currency"):
        known.setdefault(name, "")
    try:
        return ContractInfo(**known)
    except TypeError as exc:
        raise ValueError(f"not a contract: {exc}") from None


def unanswered(action: str, why: str) -> StreamError:
    return StreamError(
        ErrorCode.CONNECTION_ERROR,
        f"the source does not answer on the bus ({wire.control_subject(action)}: {why}); "
        "is `ibstream serve --bus ...` running and connected to the same NATS?",
        details={"action": action},
    )


class SourceAsks:
    """Requests to the source's control responder, on one NATS connection."""

    def __init__(self, nc: Any, timeout: float = 5.0):
        self.nc = nc
        self.timeout = timeout

    async def ask(self, action: str, body: dict) -> dict:
        """The `ok` object of the source's reply; its `error` raised as the typed error."""
        import nats.errors

        if self.nc is None or not self.nc.is_connected:
            raise unanswered(action, "the bus is not connected")
        try:
            reply = await self.nc.request(
                wire.control_subject(action), orjson.dumps(body), timeout=self.timeout
            )
        except nats.errors.NoRespondersError:
            raise unanswered(action, "no source is listening") from None
        except (nats.errors.TimeoutError, TimeoutError):
            raise unanswered(action, f"no reply within {self.timeout:g} s") from None
        except nats.errors.Error as exc:
            raise unanswered(action, f"{type(exc).__name__}: {exc}") from None
        try:
            answer = orjson.loads(reply.data)
        except orjson.JSONDecodeError:
            answer = None
        if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
            raise error_from_body(answer["error"])
        if not isinstance(answer, dict) or not isinstance(answer.get("ok"), dict):
            raise StreamError(
                ErrorCode.INTERNAL_ERROR,
                f"the source's reply to {action} is not the bus protocol's "
                f"({reply.data[:120]!r}); are source and edge the same ibstream version?",
            )
        return answer["ok"]

    async def resolve(self, spec: str | int) -> ContractInfo:
        ok = await self.ask("resolve", {"spec": spec})
        try:
            return contract_from(ok.get("contract"))
        except ValueError as exc:
            raise self._malformed("resolve", exc) from None

    async def search(self, symbol: str) -> list[ContractInfo]:
        ok = await self.ask("search", {"symbol": symbol})
        found = ok.get("contracts")
        try:
            if not isinstance(found, list):
                raise ValueError("no contracts list")
            return [contract_from(c) for c in found]
        except ValueError as exc:
            raise self._malformed("search", exc) from None

    async def hold(
        self, holder: str, contract_id: int, tick_type: TickType, lease: float
    ) -> tuple[str, int]:
        """Hold a stream upstream for `lease` seconds: the source's (server_id, last
        sequence) of that stream."""
        body = {
            "holder": holder,
            "contract_id": contract_id,
            "tick_type": tick_type.value,
            "lease_seconds": lease,
        }
        ok = await self.ask("hold", body)
        server_id, last = ok.get("server_id"), ok.get("last_sequence")
        if not isinstance(server_id, str) or not isinstance(last, int) or last < 0:
            raise self._malformed("hold", ValueError(f"got {ok!r:.120}"))
        return server_id, last

    async def release(self, holder: str, contract_id: int, tick_type: TickType) -> None:
        body = {"holder": holder, "contract_id": contract_id, "tick_type": tick_type.value}
        await self.ask("release", body)

    @staticmethod
    def _malformed(action: str, exc: Exception) -> StreamError:
        log.warning("malformed %s reply from the source: %s", action, exc)
        return StreamError(
            ErrorCode.INTERNAL_ERROR, f"the source's {action} reply is malformed: {exc}"
        )
