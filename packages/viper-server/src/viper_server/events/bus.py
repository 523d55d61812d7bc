"""One bus for every lifecycle event; each subscriber has its own bounded queue.

The engine stores an event first (the store gives it its sequence number) and then calls
`EventBus.publish`, which puts it on every matching subscriber's queue without ever waiting:
a full queue drops the event for that subscriber only, with a warning, so a slow SSE client
never holds up the engine or other subscribers. `subscribe(after_id=N)` first replays stored
events after N (for SSE `Last-Event-ID`) and then continues live, without gaps or duplicates.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager

from viper_protocol.models.events import EVENT_CLASSES, Event, EventType
from viper_server.store import Store, StoredEvent

logger = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 1024
REPLAY_PAGE = 500


def to_event(stored: StoredEvent) -> Event:
    """The protocol event object of a stored event."""
    cls = EVENT_CLASSES[EventType(stored.type)]
    return cls(
        id=stored.id,
        vm=stored.vm,
        status=stored.status,
        message=stored.message,
        timestamp=stored.timestamp,
        data=dict(stored.data),
    )


class Subscription:
    """An async iterator of the events one subscriber asked for.

    Iteration ends when the bus closes. `dropped` counts events lost to a full queue.
    """

    def __init__(
        self,
        *,
        types: Collection[str] | None,
        vm: str | None,
        predicate: Callable[[Event], bool] | None,
        maxsize: int,
    ) -> None:
        self._types = frozenset(str(t) for t in types) if types is not None else None
        self._vm = vm
        self._predicate = predicate
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize)
        self._backlog: list[Event] = []
        self._after_id = 0
        self._closed = False
        self.dropped = 0

    def matches(self, event: Event) -> bool:
        """True when this subscriber wants `event`."""
        if self._types is not None and str(event.type) not in self._types:
            return False
        if self._vm is not None and event.vm != self._vm:
            return False
        return self._predicate is None or self._predicate(event)

    def offer(self, event: Event) -> None:
        """Queue `event` if wanted; drop it (with a warning) when the queue is full."""
        if self._closed or not self.matches(event):
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                logger.warning(
                    "slow event subscriber: dropped %d event(s), latest id %d",
                    self.dropped,
                    event.id,
                )

    def close(self) -> None:
        """End the iteration (after the events already queued)."""
        if self._closed:
            return
        self._closed = True
        while True:
            try:
                self._queue.put_nowait(None)
                return
            except asyncio.QueueFull:
                # Make room for the end marker: a closing subscriber loses its oldest event.
                self._queue.get_nowait()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        if self._backlog:
            event = self._backlog.pop(0)
            self._after_id = event.id
            return event
        while True:
            item = await self._queue.get()
            if item is None:
                self._queue.put_nowait(None)  # stay ended for later calls
                raise StopAsyncIteration
            if item.id > self._after_id:
                self._after_id = item.id
                return item

    async def get(self, timeout: float | None = None) -> Event:
        """The next event, waiting at most `timeout` seconds.

        Raises:
            TimeoutError: nothing arrived in time.
            StopAsyncIteration: the bus closed.
        """
        async with asyncio.timeout(timeout):
            return await self.__anext__()


class EventBus:
    """Fans published events out to subscribers. Replays come from the store."""

    def __init__(self, store: Store | None = None) -> None:
        self.store = store
        self._subscriptions: set[Subscription] = set()
        self._closed = False
        self.published = 0

    @property
    def subscriber_count(self) -> int:
        """How many subscriptions are open now."""
        return len(self._subscriptions)

    def publish(self, event: Event) -> None:
        """Deliver `event` to every matching subscriber; never blocks."""
        self.published += 1
        for sub in list(self._subscriptions):
            sub.offer(event)

    @asynccontextmanager
    async def subscribe(
        self,
        types: Collection[EventType | str] | None = None,
        vm: str | None = None,
        *,
        predicate: Callable[[Event], bool] | None = None,
        after_id: int | None = None,
        maxsize: int = DEFAULT_QUEUE_SIZE,
    ) -> AsyncIterator[Subscription]:
        """Listen to events (of some `types`, of one `vm`) until the block exits.

        With `after_id` (a `Last-Event-ID`), stored events after it come first, then live
        ones; an event is never delivered twice.
        """
        sub = Subscription(types=types, vm=vm, predicate=predicate, maxsize=maxsize)
        # Register before reading the store, so nothing published meanwhile is lost.
        self._subscriptions.add(sub)
        try:
            if self._closed:
                sub.close()
            elif after_id is not None:
                sub._after_id = after_id
                sub._backlog = [e for e in await self.replay(after_id) if sub.matches(e)]
            yield sub
        finally:
            self._subscriptions.discard(sub)
            sub.close()

    async def replay(self, after_id: int) -> list[Event]:
        """Every stored event with an id above `after_id`, oldest first.

        Raises:
            RuntimeError: the bus has no store.
        """
        if self.store is None:
            raise RuntimeError("this event bus has no store to replay from")
        events: list[Event] = []
        last = after_id
        while True:
            page = await self.store.events_after(last, REPLAY_PAGE)
            for stored in page:
                try:
                    events.append(to_event(stored))
                except ValueError:
                    logger.warning(
                        "skipping stored event %d of unknown type %r", stored.id, stored.type
                    )
            if len(page) < REPLAY_PAGE:
                return events
            last = page[-1].id

    def close(self) -> None:
        """End every subscription (on shutdown, so SSE and WebSocket streams finish)."""
        self._closed = True
        for sub in list(self._subscriptions):
            sub.close()
