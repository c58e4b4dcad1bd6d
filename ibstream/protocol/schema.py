"""The published JSON Schema of the WebSocket protocol (`GET /v2/schema`), built from the
same pydantic models that validate client messages and describe server messages.

One document: `client` and `server` each point at a `oneOf` over that side's message types
(discriminated by `type`), with every model under the shared `$defs`.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

from pydantic import Field, TypeAdapter
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import core_schema

from ibstream.protocol import messages, requests
from ibstream.protocol.encode import PROTOCOL_VERSION

DIALECT = "https://json-schema.org/draft/2020-12/schema"
_REF = "#/$defs/{model}"

ClientMessage = Annotated[
    requests.SubscribeRequest
    | requests.UnsubscribeRequest
    | requests.UnsubscribeAllRequest
    | requests.PingRequest
    | requests.StatsRequest
    | requests.HistoryRequest
    | requests.HistoryCancelRequest,
    Field(discriminator="type"),
]


class OmittedNotNull(GenerateJsonSchema):
    """The server omits a field that has no value, it never sends null: publish optional
    fields as optional, not as nullable (`anyOf: [X, null]`, `default: null`)."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> dict[str, Any]:
        return self.generate_inner(schema["schema"])

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> dict[str, Any]:
        out = super().default_schema(schema)
        if out.get("default", 0) is None:
            out.pop("default")
        return out


def _side(kind: Any, generator: type[GenerateJsonSchema]) -> tuple[dict, dict]:
    schema = TypeAdapter(kind).json_schema(ref_template=_REF, schema_generator=generator)
    return schema, schema.pop("$defs", {})


@cache
def schema_document() -> dict:
    """The whole document; cached (it only changes with the code)."""
    client, client_defs = _side(ClientMessage, GenerateJsonSchema)
    server, server_defs = _side(messages.ServerMessage, OmittedNotNull)
    clash = [k for k in client_defs.keys() & server_defs.keys() if client_defs[k] != server_defs[k]]
    if clash:  # a model name used on both sides for different shapes
        raise RuntimeError(f"schema names used twice: {clash}")
    defs = {**client_defs, **server_defs, "ClientMessage": client, "ServerMessage": server}
    return {
        "$schema": DIALECT,
        "$id": "/v2/schema",
        "title": "ibstream WebSocket protocol",
        "description": "client: what a client may send on /v2/ws/stream (subscribe, "
        "unsubscribe, unsubscribe_all, ping) and /ws/control (stats, ping); server: every "
        "message the server sends, on WebSocket and as SSE `data:`. Fields without a value "
        "are absent, never null.",
        "version": PROTOCOL_VERSION,
        "client": {"$ref": "#/$defs/ClientMessage"},
        "server": {"$ref": "#/$defs/ServerMessage"},
        "$defs": defs,
    }


def side_schema(side: str) -> dict:
    """A standalone schema for one side ("client" or "server"), ready to compile."""
    doc = schema_document()
    return {"$schema": DIALECT, **doc[side], "$defs": doc["$defs"]}


def message_types(side: str) -> list[str]:
    """The `type` values of one side's messages, as the schema lists them."""
    mapping = schema_document()["$defs"][f"{side.capitalize()}Message"]["discriminator"]
    return sorted(mapping["mapping"])
