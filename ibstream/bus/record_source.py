"""What the bus recorder asks of the bus: the connection (reached with backoff, one log line
per outage), the JetStream stream the source creates, and contracts (from `stream_opened`
events, else `ibstream.control.resolve` when the recorder starts after those expired)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import nats
import nats.errors
import nats.js.errors
import orjson
from nats.js import api

from ibstream.bus import wire
from ibstream.bus.link import connection_status
from ibstream.bus.record_run import contract_of
from ibstream.client.options import Backoff
from ibstream.model import ContractInfo
from ibstream.store import catalog, layout

log = logging.getLogger(__name__)
RESOLVE_TIMEOUT = 5.0
BACKOFF = Backoff(initial=0.2, maximum=5.0)


class Stopped(Exception):
    """The recorder was asked to stop while it waited for the bus or the source."""


async def pause(stop: asyncio.Event, delay: float) -> None:
    """A backoff's wait that a stop ends at once (raising Stopped)."""
    if stop.is_set():
        raise Stopped
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)
    if stop.is_set():
        raise Stopped


class Connection:
    """The recorder's NATS connection; nats-py reconnects it by itself once it was up."""

    def __init__(self, url: str, stop: asyncio.Event) -> None:
        self.url = url
        self.stop = stop  # set: every retry below ends (Stopped)
        self.nc: nats.NATS | None = None
        self.connected = False
        self.reached = False  # connected once: later outages are nats-py's reconnects
        self.told = False  # the one "cannot reach" warning was logged
        self.outages = 0  # unreachable at start-up, then each loss
        self.down_since: float | None = time.monotonic()  # the outage's start; None while up
        self.last_error: str | None = None

    @property
    def js(self) -> nats.js.JetStreamContext:
        assert self.nc is not None
        return self.nc.jetstream()

    async def connect(self) -> None:
        """Reach the bus; nats-py retries until it answers (one warning meanwhile), and a
        stop ends the wait (Stopped)."""
        self.nc = nats.NATS()
        connecting = asyncio.ensure_future(
            self.nc.connect(
                self.url.split(","),  # a cluster's nodes, any of them
                name="ibstream-recorder",
                max_reconnect_attempts=-1,  # from the first attempt on, for ever
                reconnect_time_wait=0.5,
                disconnected_cb=self._down,
                reconnected_cb=self._up,
                error_cb=self._error,
            )
        )
        stopping = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait([connecting, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not connecting.done():
            connecting.cancel()
            raise Stopped
        connecting.result()
        self.connected = self.reached = True
        self.down_since = None
        if self.told:
            log.warning("the bus at %s answers now", self.url)

    async def stream_info(self) -> api.StreamInfo:
        """The bus's JetStream stream, waiting for the source to create it."""
        told = False
        for delay in BACKOFF.delays():
            try:
                return await self.js.stream_info(wire.STREAM)
            except nats.js.errors.NotFoundError:
                if not told:
                    log.warning(
                        "the bus at %s has no stream %s yet: waiting for a source "
                        "(`ibstream serve --bus %s`)", self.url, wire.STREAM, self.url,
                    )  # fmt: skip
                    told = True
            except (nats.errors.Error, TimeoutError) as exc:
                log.debug("stream info failed: %s", exc)
            await pause(self.stop, delay)
        raise AssertionError("unreachable: the backoff never ends")

    async def durable_consumer(
        self, durable: str, subject: str, ack_wait: float
    ) -> tuple[nats.js.JetStreamContext.PullSubscription, int]:
        """The durable pull consumer `durable` (ack-all), set back to its ack floor: what a
        killed recorder had read but not acknowledged comes first, in order, not after
        `ack_wait`. Its subscription and that floor (0: a new consumer, from the start)."""
        js, floor = self.js, 0
        with contextlib.suppress(nats.js.errors.NotFoundError):
            consumer = await js.consumer_info(wire.STREAM, durable)
            floor = consumer.ack_floor.stream_seq if consumer.ack_floor else 0
            await js.delete_consumer(wire.STREAM, durable)
        config = api.ConsumerConfig(
            durable_name=durable,
            ack_policy=api.AckPolicy.ALL,
            ack_wait=ack_wait,
            max_ack_pending=-1,
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE if floor else api.DeliverPolicy.ALL,
            opt_start_seq=floor + 1 if floor else None,
        )
        sub = await js.pull_subscribe(subject, durable=durable, stream=wire.STREAM, config=config)
        return sub, floor

    async def request(self, action: str, body: dict) -> dict:
        """A control request's `ok` answer (StreamError-like ValueError if refused)."""
        assert self.nc is not None
        reply = await self.nc.request(
            wire.control_subject(action), orjson.dumps(body), timeout=RESOLVE_TIMEOUT
        )
        answer = orjson.loads(reply.data)
        if not isinstance(answer, dict) or not isinstance(answer.get("ok"), dict):
            raise ValueError(
                f"control {action} refused: {answer.get('error') if isinstance(answer, dict) else answer}"
            )
        return answer["ok"]

    async def _down(self) -> None:
        if self.connected:
            self.connected = False
            self.outages += 1
            self.down_since = time.monotonic()
            self.last_error = "NATS connection lost"
            log.warning(
                "lost the bus at %s; reconnecting (nothing unwritten is acknowledged)", self.url
            )

    async def _up(self) -> None:
        self.connected = True
        self.down_since = None
        log.warning("reconnected to the bus at %s", self.url)

    async def _error(self, exc: Exception) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        if not self.reached and not self.told:
            self.told = True
            self.outages += 1
            log.warning("cannot reach the bus at %s (%s); retrying", self.url, exc or type(exc))
        log.debug("bus error: %r", exc)

    def status(self) -> dict:
        """The `bus` section of the recorder's `/health` (the source's and edge's shape)."""
        return connection_status(
            self.url, self.connected, self.outages, self.down_since, self.last_error
        )

    async def close(self) -> None:
        self.connected = False  # a disconnect of our own making: nothing to warn about
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()


class Contracts:
    """Each contract's `ContractInfo`, as the source described it (on the bus, or in the
    parts recorded before: a restarted recorder whose `stream_opened` events were read and
    acknowledged by its previous run still knows them while the source is away)."""

    def __init__(self, bus: Connection, root: layout.StoreRoot) -> None:
        self.bus = bus
        self.root = root
        self.known: dict[int, ContractInfo] = {}

    def learn(self, contract: ContractInfo) -> None:
        self.known[contract.contract_id] = contract

    async def get(self, contract_id: int) -> ContractInfo:
        """Known, else asked of the source (`ibstream.control.resolve`) until it answers:
        the recorder reads nothing further meanwhile, so nothing goes unrecorded."""
        contract = self.known.get(contract_id)
        if contract is None:
            contract = await asyncio.to_thread(self._stored, contract_id)
        if contract is not None:
            self.learn(contract)
            return contract
        told = False
        for delay in BACKOFF.delays():
            try:
                answer = await self.bus.request("resolve", {"spec": contract_id})
                contract = contract_of(answer.get("contract"))
                self.learn(contract)
                return contract
            except (ValueError, TypeError, nats.errors.Error, TimeoutError) as exc:
                if not told:
                    log.warning("cannot learn contract %d from the source (%s); asking again",
                                contract_id, exc)  # fmt: skip
                    told = True
            await pause(self.bus.stop, delay)
        raise AssertionError("unreachable: the backoff never ends")

    def _stored(self, contract_id: int) -> ContractInfo | None:
        parts = [p for p in catalog.list_parts(self.root) if p.contract_id == contract_id]
        body = catalog.Validator(self.root).contracts(parts).get(contract_id)
        try:
            return None if body is None else contract_of(body)
        except (TypeError, ValueError):
            return None
