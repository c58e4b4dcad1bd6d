"""The control requests of the bus (`ibstream.control.<action>`) as pydantic models.

The source validates every request with these (the requester builds the same fields), so a
bad one is answered with INVALID_MESSAGE naming the field, as a client message is, and never
reaches the hub. Unknown fields are refused: a typo must not silently change a lease.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ibstream.protocol import rejections
from ibstream.protocol.requests import MAX_CONID, MAX_ID_LEN, ContractSpec, TickTypeName

MAX_LEASE_SECONDS = 3_600.0
MAX_SYMBOL_LEN = 64
ConId = Annotated[int, Field(gt=0, le=MAX_CONID, strict=True)]
Holder = Annotated[str, Field(min_length=1, max_length=MAX_ID_LEN)]


class ControlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    EXPECTED: ClassVar[dict[str, str]] = {
        "spec": f"a conId (265598, 1 to {MAX_CONID}) or a symbol such as 'AAPL'",
        "symbol": f"a symbol such as 'AAPL' (up to {MAX_SYMBOL_LEN} chars)",
        "holder": f"the holder's name, a string of 1 to {MAX_ID_LEN} chars",
        "contract_id": f"a conId, an integer 1 to {MAX_CONID}",
        "tick_type": "a tick type such as bid_ask or last",
        "lease_seconds": f"a number of seconds above 0, up to {MAX_LEASE_SECONDS:g}",
    }


class Resolve(ControlRequest):
    spec: ContractSpec


class Search(ControlRequest):
    symbol: Annotated[str, Field(min_length=1, max_length=MAX_SYMBOL_LEN)]


class Release(ControlRequest):
    holder: Holder
    contract_id: ConId
    tick_type: TickTypeName


class Hold(Release):
    lease_seconds: Annotated[float, Field(gt=0, le=MAX_LEASE_SECONDS, allow_inf_nan=False)]


class Status(ControlRequest):
    pass


MODELS: dict[str, type[ControlRequest]] = {
    "resolve": Resolve,
    "search": Search,
    "hold": Hold,
    "release": Release,
    "status": Status,
}


def parse(action: str, body: bytes) -> ControlRequest:
    """The request of `action` from its JSON body; a MessageError names the bad field."""
    model = MODELS.get(action)
    if model is None:
        raise rejections.MessageError(
            f"unknown control action {rejections.quoted(action)}; one of {', '.join(MODELS)}",
            field="subject",
            expected=", ".join(MODELS),
        )
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise rejections.MessageError(
                "the request is not valid JSON: send a JSON object", field="body"
            ) from None
        if any(e["type"] == "model_type" and not e["loc"] for e in exc.errors()):
            raise rejections.MessageError(
                "the request must be a JSON object", field="body", expected="an object"
            ) from None
        raise rejections.from_validation(exc, root=model) from None
