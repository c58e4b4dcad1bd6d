"""One client connection: handshake, request dispatch and replies, as TWS answers them.

Market data requests are validated as TWS does: a contract without an exchange gets 321, one
the account has no permission for 354, one past the account's tick-by-tick slots 10190.
Historical ticks are answered from the contract's kept past (`hmds.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ibstream.gateway.details import contract_details_fields
from ibstream.gateway.feed import TICK_TYPES, Subscription
from ibstream.gateway.hmds import TicksRequest, no_permission, parse_request
from ibstream.gateway.instrument import SimContract, match_contracts
from ibstream.gateway.rejects import error_message, request_id, unsupported, validation_error
from ibstream.gateway.wire import FrameDecoder, ProtocolError, encode, parse_version_range

if TYPE_CHECKING:
    from ibstream.gateway.server import GatewaySimulator

log = logging.getLogger("ibstream.gateway")

MIN_CLIENT_VERSION = 157
HANDSHAKE_TIMEOUT = 10.0
FARM_STATUS = (
    (2104, "Market data farm connection is OK:usfarm"),
    (2106, "HMDS data farm connection is OK:ushmds"),
    (2158, "Sec-def data farm connection is OK:secdefil"),
)
ACCOUNT_VALUES = (
    ("NetLiquidation", "1000000.00", "USD"),
    ("TotalCashValue", "1000000.00", "USD"),
    ("AvailableFunds", "1000000.00", "USD"),
    ("BuyingPower", "4000000.00", "USD"),
)


class Session:
    """A client socket; `client_id` is set once the API has started."""

    def __init__(
        self, sim: GatewaySimulator, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.sim = sim
        self.reader = reader
        self.writer = writer
        self.client_id: int = -1
        self.version = 0
        self.started = False
        self.subs: dict[int, Subscription] = {}
        self.peer = writer.get_extra_info("peername")
        self._handlers: dict[int, Callable[[list[str]], None]] = {
            71: self._start_api, 49: self._current_time, 8: self._req_ids,
            17: self._managed_accounts, 61: self._positions, 5: self._open_orders,
            16: self._open_orders, 99: self._completed_orders, 6: self._account_updates,
            76: self._account_updates_multi, 7: self._executions, 62: self._account_summary,
            9: self._contract_details, 97: self._tick_by_tick, 98: self._cancel_tick_by_tick,
            96: self._historical_ticks, 1: self._mkt_data,
        }  # fmt: skip

    # -- output -------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        transport = self.writer.transport
        if transport.is_closing():
            return
        self.writer.write(data)
        if transport.get_write_buffer_size() > self.sim.max_write_buffer:
            log.warning("client %s is not reading; dropping its connection", self.client_id)
            transport.abort()

    def send(self, *fields: object) -> None:
        self.write(encode(*fields))

    def error(self, req_id: int, code: int, message: str) -> None:
        if self.version >= 166:
            self.send(4, 2, req_id, code, message, "")
        else:
            self.send(4, 2, req_id, code, message)

    def close(self) -> None:
        self.writer.close()

    # -- input --------------------------------------------------------------------------

    async def run(self) -> None:
        decoder = FrameDecoder()
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                hello = await self._read_messages(decoder)
            if not hello or not self._handshake(hello.pop(0)):
                return
            messages = hello
            while True:
                for fields in messages:
                    self._dispatch(fields)
                messages = await self._read_messages(decoder)
                if messages is None:
                    return
        except (ProtocolError, TimeoutError, ConnectionError) as exc:
            log.info("closing connection from %s: %r", self.peer, exc)
        finally:
            self.writer.close()

    async def _read_messages(self, decoder: FrameDecoder) -> list[list[str]] | None:
        while True:
            data = await self.reader.read(65536)
            if not data:
                return None
            messages = decoder.feed(data)
            if messages:
                return messages

    def _handshake(self, fields: list[str]) -> bool:
        offer = parse_version_range(fields[0] if fields else "")
        version = min(offer.max_version, self.sim.server_version)
        if offer.max_version < MIN_CLIENT_VERSION or version < offer.min_version:
            log.info("refusing client versions %s..%s", offer.min_version, offer.max_version)
            return False
        self.version = version
        self.send(version, time.strftime("%Y%m%d %H:%M:%S UTC", time.gmtime(self.sim.now())))
        return True

    def _dispatch(self, fields: list[str]) -> None:
        try:
            msg_id = int(fields[0])
        except (IndexError, ValueError):
            log.debug("ignoring malformed message %r", fields)
            return
        if not self.started and msg_id != 71:
            log.debug("ignoring message %s before startApi: %r", msg_id, fields)
            return
        handler = self._handlers.get(msg_id, self._unsupported)
        try:
            handler(fields)
        except (IndexError, ValueError):
            log.warning("malformed request from client %s: %r", self.client_id, fields)
        except Exception:
            log.exception("request %r from client %s failed", fields, self.client_id)

    # -- requests -----------------------------------------------------------------------

    def _start_api(self, fields: list[str]) -> None:
        client_id = int(fields[2])
        if self.started:
            return
        if not self.sim._register(self, client_id):
            self.error(-1, 326, error_message(326))
            self.close()
            return
        self.send(15, 1, self.sim.account)
        self.send(9, 1, self.sim._next_order_id)
        if self.sim.farm_status:
            for code, message in FARM_STATUS:
                self.error(-1, code, message)

    def _current_time(self, fields: list[str]) -> None:
        self.send(49, 1, int(self.sim.now()))

    def _unsupported(self, fields: list[str]) -> None:
        log.info("client %s sent unsupported request %s", self.client_id, fields[0])
        self.error(request_id(fields), *unsupported(int(fields[0])))

    def _req_ids(self, fields: list[str]) -> None:
        self.send(9, 1, self.sim._next_order_id)

    def _managed_accounts(self, fields: list[str]) -> None:
        self.send(15, 1, self.sim.account)

    def _positions(self, fields: list[str]) -> None:
        self.send(62, 1)

    def _open_orders(self, fields: list[str]) -> None:
        self.send(53, 1)

    def _completed_orders(self, fields: list[str]) -> None:
        self.send(102)

    def _account_updates(self, fields: list[str]) -> None:
        if fields[2] not in ("1", "true", "True"):
            return
        account = fields[3] or self.sim.account
        for key, value, currency in ACCOUNT_VALUES:
            self.send(6, 2, key, value, currency, account)
        self.send(8, 1, time.strftime("%H:%M", time.gmtime()))
        self.send(54, 1, account)

    def _account_updates_multi(self, fields: list[str]) -> None:
        req_id, account, model = int(fields[2]), fields[3] or self.sim.account, fields[4]
        for key, value, currency in ACCOUNT_VALUES:
            self.send(73, 1, req_id, account, model, key, value, currency)
        self.send(74, 1, req_id)

    def _executions(self, fields: list[str]) -> None:
        self.send(55, 1, int(fields[2]))

    def _account_summary(self, fields: list[str]) -> None:
        self.send(64, 1, int(fields[2]))

    def _historical_ticks(self, fields: list[str]) -> None:
        req_id = int(fields[1])
        failure = self.sim._take_failure("historical_ticks")
        request = failure or parse_request(fields)
        if not isinstance(request, TicksRequest):
            self.error(req_id, *request)
            return
        found = self._resolve(list(request.contract_fields))
        if len(found) != 1:
            self.error(req_id, 200, error_message(200))
            return
        if not self.sim.permitted(found[0]):
            self.error(req_id, *no_permission(found[0]))
            return
        outcome = self.sim._historical_ticks(request, found[0].con_id)
        if isinstance(outcome, bytes):
            self.write(outcome)
        else:
            self.error(req_id, *outcome)

    def _resolve(self, fields: list[str], include_expired: bool = False) -> list[SimContract]:
        """Contracts matching the 12 contract fields of a request."""
        con_id, symbol, sec_type, last, _strike, _right, _mult, exchange = fields[:8]
        currency, local_symbol = fields[9], fields[10]
        return match_contracts(
            self.sim.contracts, today=self.sim.session_date, con_id=int(con_id or 0),
            symbol=symbol, sec_type=sec_type, exchange=exchange, currency=currency,
            local_symbol=local_symbol, last_trade_date=last, include_expired=include_expired,
        )  # fmt: skip

    def _market_data_error(self, fields: list[str]) -> tuple[int, str] | SimContract:
        """What TWS says to a market data request for these 12 contract fields, or the
        one contract it is for."""
        if not fields[7]:
            return validation_error("Please enter exchange")
        found = self._resolve(fields)
        if len(found) != 1:
            return 200, error_message(200)
        if not self.sim.permitted(found[0]):
            return 354, error_message(354)
        return found[0]

    def _mkt_data(self, fields: list[str]) -> None:
        req_id = int(fields[2])
        outcome = self._market_data_error(fields[3:15])
        self.error(req_id, *(unsupported(1) if isinstance(outcome, SimContract) else outcome))

    def _contract_details(self, fields: list[str]) -> None:
        req_id = int(fields[2])
        failure = self.sim._take_failure("contract_details")
        if failure:
            self.error(req_id, *failure)
            return
        include_expired = fields[15] in ("1", "true", "True") if len(fields) > 15 else False
        found = self._resolve(fields[3:15], include_expired)
        if not found:
            self.error(req_id, 200, error_message(200))
            return
        today = self.sim.session_date
        # IB lists matches in no useful order; latest expiry first catches a client that
        # takes the first match for the front month
        for contract in sorted(found, key=lambda c: c.last_trade_date, reverse=True):
            self.send(*contract_details_fields(contract, req_id, self.version, today))
        self.send(52, 1, req_id)

    def _tick_by_tick(self, fields: list[str]) -> None:
        req_id, tick_type = int(fields[1]), fields[14]
        ignore_size = fields[16] in ("1", "true", "True") if len(fields) > 16 else False
        failure = self.sim._take_failure("tick_by_tick")
        if failure:
            self.error(req_id, *failure)
            return
        if req_id in self.subs:
            self.error(req_id, 322, error_message(322))
            return
        if tick_type not in TICK_TYPES:
            self.error(req_id, *validation_error(f"Invalid tick type {tick_type!r}"))
            return
        outcome = self._market_data_error(fields[2:14])
        if not isinstance(outcome, SimContract):
            self.error(req_id, *outcome)
            return
        if not self.sim.tick_by_tick_slot_free():
            self.error(req_id, 10190, error_message(10190))
            return
        sub = Subscription(self, req_id, outcome.con_id, tick_type, ignore_size)
        self.subs[req_id] = sub
        self.sim._subscribe(sub)

    def _cancel_tick_by_tick(self, fields: list[str]) -> None:
        sub = self.subs.pop(int(fields[1]), None)
        if sub is not None:
            self.sim._unsubscribe(sub)
