"""One private event loop in a daemon thread, shared by every sync `Client` of the process.

Sync calls hand coroutines to it with run_coroutine_threadsafe and wait for the result with
a deadline. The caller's own loop (a running Jupyter kernel, an `async def` test) is never
touched, so there is no "event loop is already running".
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from ibstream.client.transport import timeout_error

T = TypeVar("T")
OVERALL = "the blocking call's overall deadline, from the client's timeouts"
_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def client_loop() -> asyncio.AbstractEventLoop:
    """The loop thread, started on first use."""
    global _loop, _thread
    with _lock:
        if _loop is None or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            thread = threading.Thread(
                target=_serve, args=(loop, ready), name="ibstream-client-loop", daemon=True
            )
            thread.start()
            ready.wait()
            _loop, _thread = loop, thread
        return _loop


def _serve(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(ready.set)
    loop.run_forever()


def in_loop_thread() -> bool:
    return _thread is not None and threading.current_thread() is _thread


def refuse_on_loop_thread(what: str) -> None:
    """A blocking call on the loop thread would wait for work that thread alone can do."""
    if in_loop_thread():
        raise RuntimeError(
            f"{what} was called on the client's own event loop thread (from an on_tick / "
            "on_event callback?); use the AsyncClient API there, or hand the work to "
            "another thread"
        )


def call(coro: Coroutine[Any, Any, T], timeout: float | None, what: str) -> T:
    """Run `coro` on the loop thread and wait at most `timeout` seconds for its result."""
    if in_loop_thread():
        coro.close()
        refuse_on_loop_thread(f"Client.{what}")
    future = asyncio.run_coroutine_threadsafe(coro, client_loop())
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        if future.done():  # the coroutine itself raised TimeoutError
            raise
        future.cancel()
        raise timeout_error(what, timeout or 0.0, OVERALL) from None
    except BaseException:  # KeyboardInterrupt while waiting: stop the work too
        future.cancel()
        raise


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    return asyncio.run_coroutine_threadsafe(coro, client_loop())
