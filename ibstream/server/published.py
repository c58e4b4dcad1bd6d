"""The documented HTTP surface beyond the status endpoints: the two SSE endpoints (declared
here so OpenAPI lists their parameters and `text/event-stream` answer; `sse.open_stream`
serves them) and `GET /v2/schema`, the JSON Schema of every WebSocket message.

The SSE query parameters are documented from `SseQuery`, the model that validates them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ibstream.errors import StreamError
from ibstream.protocol.http import ERROR_RESPONSES
from ibstream.protocol.requests import EXPECTED, SseQuery
from ibstream.protocol.schema import schema_document
from ibstream.protocol.validate import parse_sse_params
from ibstream.server import sse
from ibstream.server.sse import VERSION_HEADER

if TYPE_CHECKING:
    from ibstream.server.app import ServerContext

_EVENTS = (
    "Server-Sent Events: `subscribed` first, then `tick` (or `ticks` with batch_ms), `info`, "
    "`error` and `complete`; each event's `data:` is a server message of /v2/schema. A tick's "
    "SSE id is its sequence (multi-type: `bid_ask:50,last:3`); the response ends after the "
    "last stream's `complete`."
)


class EventStream(Response):
    media_type = "text/event-stream"


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


def sse_parameters(multi: bool) -> list[dict[str, Any]]:
    """OpenAPI parameters of an SSE endpoint, from the model that validates its query."""
    props = SseQuery.model_json_schema()["properties"]
    params = [_path_param("contract_id", EXPECTED["contract_id"])]
    if not multi:
        params.append(_path_param("tick_type", "last, all_last, bid_ask or mid_point"))
    for name, prop in props.items():
        if name == "tick_types" and not multi:
            continue
        schema = next((s for s in prop.get("anyOf", [prop]) if s.get("type") != "null"), prop)
        params.append(
            {
                "name": name,
                "in": "query",
                "required": name == "tick_types",
                "schema": {k: v for k, v in schema.items() if k != "title"},
                "description": prop.get("description", ""),
            }
        )
    params.append(
        {
            "name": "Last-Event-ID",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "sent by EventSource on reconnect; same as resume_from",
        }
    )
    return params


def errors_as_json(spec: dict) -> dict:
    """Error answers are JSON whatever the endpoint streams on success: FastAPI files them
    under the route's own media type (text/event-stream for SSE), so move them."""
    for item in spec.get("paths", {}).values():
        for operation in item.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content")
                if int(status) >= 400 and content and "application/json" not in content:
                    response["content"] = {"application/json": next(iter(content.values()))}
    return spec


async def _stream(
    ctx: ServerContext, request: Request, contract: str, tick_type: str | None
) -> Response:
    """GET opens the stream. HEAD checks the request as GET would (a bad parameter is the
    same 400) but opens nothing: no IB request, no connection slot."""
    if request.method != "HEAD":
        return await sse.open_stream(ctx, request, contract, tick_type)
    try:
        parse_sse_params(
            contract,
            tick_type,
            request.query_params.multi_items(),
            request.headers.get("last-event-id"),
        )
    except StreamError as exc:
        return sse.error_response(exc)
    return Response(headers=VERSION_HEADER, media_type=EventStream.media_type)


def routes(ctx: ServerContext) -> list[APIRoute]:
    async def one(request: Request) -> Response:
        p = request.path_params
        return await _stream(ctx, request, p["contract_id"], p["tick_type"])

    async def many(request: Request) -> Response:
        return await _stream(ctx, request, request.path_params["contract_id"], None)

    async def schema() -> JSONResponse:
        return JSONResponse(schema_document(), headers=VERSION_HEADER)

    out = []
    for path, endpoint, multi in (
        ("/v2/stream/{contract_id}/{tick_type}", one, False),
        ("/v2/stream/{contract_id}", many, True),
    ):
        summary = "Stream several tick types" if multi else "Stream one tick type"
        out.append(
            APIRoute(
                path,
                endpoint,
                methods=["GET"],
                response_class=EventStream,
                response_description=_EVENTS,
                responses=ERROR_RESPONSES,
                openapi_extra={"parameters": sse_parameters(multi)},
                summary=summary + " (Server-Sent Events)",
                tags=["streams"],
            )
        )
    out.append(
        APIRoute(
            "/v2/schema",
            schema,
            methods=["GET"],
            summary="JSON Schema of every WebSocket message, client and server",
            response_description="a JSON Schema (2020-12) document: `client`, `server`, `$defs`",
            tags=["protocol"],
        )
    )
    return out
