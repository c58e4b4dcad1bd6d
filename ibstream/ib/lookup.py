"""Contract lookups on the IB connection: contract details with IB's own refusal code kept,
and TWS's clock, on which the front month of a future is picked."""

from __future__ import annotations

import asyncio
import logging
import time
from types import ModuleType

from ibstream.errors import IB_ADVISORIES, ErrorCode, StreamError, from_ib_error

log = logging.getLogger(__name__)
FARM_OK = frozenset({2104, 2106, 2107, 2108, 2119, 2158})


async def request_details(
    ib: object, lib: ModuleType, fields: dict, spec: object, timeout: float, address: str
) -> list:
    """IB's contract details for `fields`; a refusal raises with IB's number in `ib_code`
    (200 no such contract, 354, 162, 321 ...), silence past `timeout` as CONNECTION_ERROR."""
    query = lib.Contract(**fields)
    # IB's refusal of this very request ends the wait, even where the library files the code
    # as a warning and leaves the request open (ib_async does so with 321)
    refused: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()

    def on_error(req_id: int, code: int, text: str, contract: object = None) -> None:
        if contract is query and code not in FARM_OK | IB_ADVISORIES and not refused.done():
            refused.set_result((code, text))

    ib.errorEvent += on_error  # type: ignore[attr-defined]
    request = asyncio.ensure_future(ib.reqContractDetailsAsync(query))  # type: ignore[attr-defined]
    try:
        async with asyncio.timeout(timeout):
            await asyncio.wait({request, refused}, return_when=asyncio.FIRST_COMPLETED)
        if refused.done() and not (request.done() and request.result()):
            code, text = refused.result()
            raise from_ib_error(code, text, f"looking up {spec!r}", contract=spec, query=fields)
        details = request.result()
    except (ConnectionError, TimeoutError) as exc:
        reason = "did not answer" if isinstance(exc, TimeoutError) else "connection was lost"
        raise StreamError(
            ErrorCode.CONNECTION_ERROR,
            f"IB at {address} {reason} while looking up {spec!r}; retry shortly",
            details={"contract": spec},
        ) from None
    finally:
        ib.errorEvent -= on_error  # type: ignore[attr-defined]
        request.cancel()
    if not details:
        raise from_ib_error(
            200, "no contract details returned", f"looking up {spec!r}", contract=spec, query=fields
        )
    return details


class GatewayClock:
    """TWS's date, asked once per connection and by one request at a time (ib_insync keeps a
    single pending reqCurrentTime: a second concurrent caller would orphan the first)."""

    def __init__(self, ib: object, timeout: float) -> None:
        self.ib = ib
        self.timeout = timeout
        self._offset: float | None = None  # TWS's clock minus the host's, seconds
        self._probe: asyncio.Future[None] | None = None

    def reset(self) -> None:
        """A new connection (perhaps another gateway): ask its clock again."""
        self._offset = None

    async def today(self) -> str | None:
        """TWS's current date (YYYYMMDD, UTC), or None (use the host's) if it does not answer."""
        if self._offset is None:
            if self._probe is None:
                self._probe = asyncio.ensure_future(self._ask())
            await asyncio.shield(self._probe)
        if self._offset is None:
            return None
        return time.strftime("%Y%m%d", time.gmtime(time.time() + self._offset))

    async def _ask(self) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                now = await self.ib.reqCurrentTimeAsync()  # type: ignore[attr-defined]
            self._offset = now.timestamp() - time.time()
        except (ConnectionError, TimeoutError):
            log.info("IB did not tell its time; front months are picked on the host's date")
        finally:
            self._probe = None
