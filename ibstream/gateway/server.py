"""The gateway simulator: a TCP server speaking the TWS API, with fault hooks for tests.

Unmodified ib_insync and ib_async connect to it, resolve the built-in contracts and
receive tick-by-tick data from a seeded synthetic market (see `market.py`), or resolve the
contracts of a recording and receive its ticks (`replay=`, see `recorded.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable
from datetime import UTC, date, datetime
from types import TracebackType

from ibstream.gateway.contracts import SimContract, builtin_contracts, session_date_of
from ibstream.gateway.feed import Feed, Subscription
from ibstream.gateway.hmds import TicksRequest, answer, pacing_violation
from ibstream.gateway.market import Market
from ibstream.gateway.recorded import RecordedMarket, Recording
from ibstream.gateway.rejects import error_message
from ibstream.gateway.session import Session
from ibstream.gateway.tape import DEFAULT_LIMIT, Tape
from ibstream.ib.pacing import PacingLog, PacingRules

log = logging.getLogger("ibstream.gateway")

MAX_WRITE_BUFFER = 8 * 1024 * 1024
FAILABLE_REQUESTS = ("tick_by_tick", "contract_details", "historical_ticks")


class GatewaySimulator:
    """A simulated TWS / IB Gateway. Use `async with` or `start()` / `stop()`.

    Account limits as IB sets them: `tick_by_tick_slots` simultaneous tick-by-tick requests
    over all connections (None: unlimited; past it 10190), and `no_permission`, contracts
    (symbols, local symbols or conIds) the account has no market data for (354).
    `session_date` is the simulated trading day (default: `$IBSTREAM_SESSION_DATE`, else
    today): it decides which futures have expired and which is the front month, and is the
    date the simulator's clock (handshake, reqCurrentTime) reports; ticks carry the host's
    time. With `replay` (a `load_recording(...)`), the recording's contracts and ticks take
    the place of the built-in ones and the synthetic market, and the session date defaults
    to the recording's first day.

    History: each contract's `Tape` keeps the last `history_limit` trades, quotes and
    midpoints its market produced (or replayed; 0 keeps none, for benches), and `reqHistoricalTicks` is answered from it
    under IB's pacing rules (`history_pacing`, settable later as `pacing.rules`; a violation
    is 162). `history_requests` and `pacing_violations` count what was answered and refused.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        seed: int = 0,
        rate: float = 20.0,
        server_version: int = 176,
        account: str = "DU1234567",
        contracts: Iterable[SimContract] | None = None,
        farm_status: bool = True,
        bursts: bool = True,
        max_write_buffer: int = MAX_WRITE_BUFFER,
        tick_by_tick_slots: int | None = None,
        no_permission: Collection[str | int] = (),
        session_date: date | None = None,
        replay: Recording | None = None,
        history_limit: int = DEFAULT_LIMIT,
        history_pacing: PacingRules | None = None,
    ) -> None:
        if not (isinstance(history_limit, int) and history_limit >= 0):
            raise ValueError(
                f"history_limit must be an int >= 0 (0: no history), not {history_limit!r}"
            )
        if tick_by_tick_slots is not None and tick_by_tick_slots < 0:
            raise ValueError(f"tick_by_tick_slots must be >= 0 or None, not {tick_by_tick_slots}")
        self.host = host
        self.port = port
        self.seed = seed
        self.server_version = server_version
        self.account = account
        if replay is not None:
            session_date, contracts = session_date or replay.day, replay.contracts
        session_date = session_date or session_date_of()
        self.contracts: tuple[SimContract, ...] = tuple(
            builtin_contracts(session_date) if contracts is None else contracts
        )
        self.replay = replay
        self.farm_status = farm_status
        self.max_write_buffer = max_write_buffer
        self.tick_by_tick_slots = tick_by_tick_slots
        self.no_permission = {str(x).upper() for x in no_permission}
        self.session_date = session_date
        today = datetime.now(UTC).date()
        self._clock_offset = (session_date - today).days * 86400.0
        self.total_connections = 0  # every accepted socket, refused ones included
        self.refused_connections = 0
        self._next_order_id = 1
        self.pacing = PacingLog(history_pacing)
        self.history_requests = 0
        self.pacing_violations = 0
        self._feeds = {
            c.con_id: Feed(
                Market(c, seed, rate, bursts=bursts)
                if replay is None
                else replay.markets[c.con_id],
                self._notify,
                Tape(c, history_limit),
            )
            for c in self.contracts
        }
        if replay is not None:
            for feed in self._feeds.values():
                feed.tape.use_recorded_trades(
                    replay.markets[feed.market.contract.con_id].trade_code
                )
        self._sessions: set[Session] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._failures: dict[str, deque[tuple[int, str, int]]] = {
            r: deque() for r in FAILABLE_REQUESTS
        }
        self._refuse_until = 0.0
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.debug("gateway simulator started on %s:%s", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for session in list(self._sessions):
            session.writer.transport.abort()
        for feed in self._feeds.values():
            await feed.stop()
        if self._tasks:  # aborted sockets end their sessions; cancel only stragglers
            _, pending = await asyncio.wait(list(self._tasks), timeout=1.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> GatewaySimulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- observability ------------------------------------------------------------------

    @property
    def connections(self) -> int:
        """Live connections whose API has started."""
        return sum(1 for s in self._sessions if s.started)

    @property
    def subscriptions(self) -> list[tuple[int, int, int, str]]:
        """(client_id, req_id, con_id, tick_type) for every active tick-by-tick request."""
        return [
            (s.client_id, sub.req_id, sub.con_id, sub.tick_type)
            for s in self._sessions
            for sub in s.subs.values()
        ]

    def now(self) -> float:
        """The simulator's clock (epoch seconds): the host's time of day on `session_date`."""
        return time.time() + self._clock_offset

    def permitted(self, contract: SimContract) -> bool:
        """Whether the account may receive market data for the contract."""
        names = (contract.symbol, contract.local_symbol, str(contract.con_id))
        return not self.no_permission.intersection(n.upper() for n in names)

    def tick_by_tick_slot_free(self) -> bool:
        slots = self.tick_by_tick_slots
        return slots is None or len(self.subscriptions) < slots

    def tape(self, con_id: int) -> Tape:
        """The contract's kept past: what its history answers come from."""
        return self._feeds[con_id].tape

    def market(self, con_id: int) -> Market | RecordedMarket:
        """The market, and so the ground truth, of a contract."""
        return self._feeds[con_id].market

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10) -> None:
        """Return once predicate() is true; it is re-checked on every state change
        (connect, disconnect, subscribe, cancel, refused socket, market batch)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await self._changed.wait()

    # -- faults -------------------------------------------------------------------------

    def set_rate(self, events_per_second: float, con_id: int | None = None) -> None:
        feeds = self._feeds.values() if con_id is None else [self._feeds[con_id]]
        for feed in feeds:
            feed.market.rate = events_per_second

    async def drop_connections(self, *, keep: Collection[int] = ()) -> int:
        """Close every client socket now (but those of the API client ids in `keep`: an
        observer that must see everything); returns how many were closed."""
        sessions = [s for s in self._sessions if s.client_id not in keep]
        for session in sessions:
            session.close()
        await self.wait_for(lambda: not (self._sessions & set(sessions)))
        return len(sessions)

    def refuse_connections(self, seconds: float) -> None:
        """For `seconds`, accept and at once close new sockets, like a restarting gateway."""
        self._refuse_until = asyncio.get_running_loop().time() + seconds

    def send_error(self, code: int, message: str | None = None, req_id: int = -1) -> None:
        """Send an error message to every connection.

        1100 also pauses all data until 1101 or 1102; 1101 also ends every subscription
        (data lost: clients must resubscribe), as TWS does.
        """
        text = message if message is not None else self.error_message(code)
        for session in self._started():
            session.error(req_id, code, text)
        if code in (1100, 1101, 1102):
            for feed in self._feeds.values():
                feed.paused = code == 1100
        if code == 1101:
            for session in self._started():
                for sub in list(session.subs.values()):
                    self._unsubscribe(sub)
                session.subs.clear()
            self._notify()

    def make_past(self, seconds: float, con_ids: Collection[int] | None = None) -> int:
        """Give contracts (all, or `con_ids`) `seconds` of past at once, as their markets
        would have made it up to now (`Feed.make_past`): what `reqHistoricalTicks` then
        answers from. For benches; before anyone subscribes them. Events made."""
        if not (isinstance(seconds, int | float) and 0 < seconds < float("inf")):
            raise ValueError(f"seconds must be a number above 0, not {seconds!r}")
        now = time.time()
        return sum(
            feed.make_past(seconds, now)
            for con_id, feed in self._feeds.items()
            if con_ids is None or con_id in con_ids
        )

    def fail_next(
        self, request: str, code: int, message: str | None = None, *, after: int = 0
    ) -> None:
        """The next `request` (one of FAILABLE_REQUESTS) gets this error; with `after`, the
        one after that many more were answered (IB refusing part-way through a paged fetch)."""
        if request not in self._failures:
            raise ValueError(f"request must be one of {FAILABLE_REQUESTS}, not {request!r}")
        if not (isinstance(after, int) and after >= 0):
            raise ValueError(f"after must be an int >= 0, not {after!r}")
        self._failures[request].append((code, message or self.error_message(code), after))

    @staticmethod
    def error_message(code: int) -> str:
        return error_message(code)

    # -- used by sessions ---------------------------------------------------------------

    def _started(self) -> list[Session]:
        return [s for s in self._sessions if s.started]

    def _register(self, session: Session, client_id: int) -> bool:
        if any(s.client_id == client_id for s in self._started()):
            log.info("client id %s is already in use", client_id)
            return False
        session.client_id = client_id
        session.started = True
        log.info("client %s connected from %s", client_id, session.peer)
        self._notify()
        return True

    def _take_failure(self, request: str) -> tuple[int, str] | None:
        queue = self._failures[request]
        if not queue:
            return None
        code, text, after = queue[0]
        if after:
            queue[0] = (code, text, after - 1)
            return None
        queue.popleft()
        return code, text

    def _historical_ticks(self, request: TicksRequest, con_id: int) -> bytes | tuple[int, str]:
        """An answer under the pacing rules: the message, or (code, text) of a refusal."""
        now = asyncio.get_running_loop().time()
        identity = (con_id, *request.identity[1:])
        kind = (con_id, request.what)
        if self.pacing.wait(identity, kind, now) > 0:
            self.pacing_violations += 1
            return pacing_violation()
        self.pacing.add(identity, kind, now)
        self.history_requests += 1
        return answer(request, self._feeds[con_id].tape)

    def _subscribe(self, sub: Subscription) -> None:
        self._feeds[sub.con_id].add(sub)
        self._notify()

    def _unsubscribe(self, sub: Subscription) -> None:
        self._feeds[sub.con_id].remove(sub)
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.total_connections += 1
        if asyncio.get_running_loop().time() < self._refuse_until:
            self.refused_connections += 1
            writer.close()
            self._notify()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        session = Session(self, reader, writer)
        self._sessions.add(session)
        try:
            await session.run()
        except asyncio.CancelledError:
            # asyncio's stream callback logs a cancelled handler task as an error
            log.debug("session of client %s cancelled", session.client_id)
        finally:
            self._sessions.discard(session)
            self._tasks.discard(task)
            for sub in session.subs.values():
                self._unsubscribe(sub)
            session.subs.clear()
            if session.started:
                log.info("client %s disconnected", session.client_id)
            self._notify()


async def run_gateway(
    host: str = "127.0.0.1",
    port: int = 4002,
    seed: int = 0,
    rate: float = 20.0,
    session_date: date | None = None,
    replay: Recording | None = None,
) -> None:
    """Run a gateway simulator until cancelled."""
    async with GatewaySimulator(
        host, port, seed=seed, rate=rate, session_date=session_date, replay=replay
    ) as sim:
        if replay is not None:
            log.info(
                "replaying %s: %s ticks of %s (%s) from %s at speed %g%s; the clock starts at the "
                "first subscription",
                replay.location, f"{replay.ticks:,}", len(replay.contracts),
                ", ".join(c.local_symbol or c.symbol for c in replay.contracts), replay.day,
                replay.clock.speed, ", looping" if replay.clock.loop else "",
            )  # fmt: skip
        log.info("gateway simulator listening on %s:%s", sim.host, sim.port)
        await asyncio.Event().wait()
