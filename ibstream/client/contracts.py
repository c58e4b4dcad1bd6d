"""`contracts("ES")`: every listing the server's `GET /v2/contracts` finds, as a DataFrame.

One row per contract: conId, symbol, local symbol, security type, exchange, currency, tick
size (`min_tick`), multiplier, expiry (`last_trade_date`) and description, in the order IB
gives them. The same facts describe a collected frame (`frame.attrs["contracts"]`).
"""

from __future__ import annotations

from typing import Any

import orjson

from ibstream.client.http import error_from_response, get, http_client
from ibstream.client.options import ClientOptions

COLUMNS = (
    "contract_id",
    "symbol",
    "local_symbol",
    "sec_type",
    "exchange",
    "currency",
    "min_tick",
    "multiplier",
    "last_trade_date",
    "description",
)


def check_symbol(symbol: object, name: str = "symbol") -> str:
    """A symbol or conId as text; the errors name the argument (`name`)."""
    if not isinstance(symbol, str | int) or isinstance(symbol, bool):
        raise TypeError(
            f"{name} must be a string such as 'ES' or 'AAPL' (or a conId); got {symbol!r} "
            f"({type(symbol).__name__})"
        )
    text = str(symbol).strip()
    if not text:
        raise ValueError(f"{name} must not be empty; give one such as 'ES', 'AAPL' or 'EUR.USD'")
    return text


async def lookup(server: str, token: str | None, symbol: str, options: ClientOptions) -> list:
    """The server's contract details for `symbol` (its typed error if it finds none)."""
    async with http_client(server, token, options) as http:
        params = {"symbol": symbol}
        response = await get(http, "/v2/contracts", options.request_timeout, params=params)
        if response.status_code != 200:
            raise await error_from_response(response)
        return orjson.loads(response.content)


def contracts_frame(rows: list[dict]) -> Any:
    """One row per contract, the columns of COLUMNS (missing facts as <NA> / NaN)."""
    import pandas as pd

    frame = pd.DataFrame([{name: row.get(name) for name in COLUMNS} for row in rows])
    frame = frame.reindex(columns=list(COLUMNS))
    types = {name: pd.StringDtype() for name in COLUMNS if name not in ("contract_id", "min_tick")}
    return frame.astype({"contract_id": "int64", "min_tick": "float64", **types})
