"""Long-lived responses (SSE, WebSockets, the DevTools relay) and their shutdown.

aiohttp waits up to `shutdown_timeout` for open handlers; an event stream never ends on its
own, so `on_shutdown` tells each one to stop (aiohttp-sse `examples/graceful_shutdown.py`).
Handlers register for the span of their stream with `StreamRegistry.track()` and watch the
returned event; `ProxyStats` counts the DevTools proxy's connections for /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import attrs

logger = logging.getLogger(__name__)

Closer = Callable[[], Awaitable[None]]
T = TypeVar("T")


@attrs.define
class ProxyStats:
    """Counters of the DevTools WebSocket proxy."""

    active: int = 0
    total: int = 0
    frames_to_browser: int = 0
    frames_to_client: int = 0


class StreamRegistry:
    """Every open stream, with a stop signal and an optional closer run at shutdown."""

    def __init__(self) -> None:
        self._streams: dict[asyncio.Event, Closer | None] = {}
        self.closing = False

    def __len__(self) -> int:
        return len(self._streams)

    @contextlib.asynccontextmanager
    async def track(self, closer: Closer | None = None) -> AsyncIterator[asyncio.Event]:
        """Register a stream; the yielded event is set when the server shuts down."""
        stop = asyncio.Event()
        if self.closing:
            stop.set()
        self._streams[stop] = closer
        try:
            yield stop
        finally:
            self._streams.pop(stop, None)

    async def close_all(self) -> None:
        """Signal every stream to stop and run the closers (the app's `on_shutdown`)."""
        self.closing = True
        closers = []
        for stop, closer in list(self._streams.items()):
            stop.set()
            if closer is not None:
                closers.append(closer())
        results = await asyncio.gather(*closers, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                logger.warning("closing a stream failed: %r", result)


async def cancel_and_wait(*tasks: asyncio.Future[Any]) -> None:
    """Cancel `tasks` and wait until they are done, without raising what they raise.

    Unlike `suppress(CancelledError): await task`, a cancellation aimed at the caller while it
    waits still propagates.
    """
    pending = {t for t in tasks if not t.done()}
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            logger.debug("stream task ended with %r", task.exception())


async def race_stop(awaitable: Awaitable[T], stop: asyncio.Event) -> T | None:
    """Await `awaitable`, or return None as soon as `stop` is set (cancelling it)."""
    task = asyncio.ensure_future(awaitable)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        await cancel_and_wait(task)
    if task.cancelled():
        return None
    return task.result()
