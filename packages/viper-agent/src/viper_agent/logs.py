"""The agent's log hub: a numbered ring of recent entries fanned out to live subscribers.

Console messages, page errors, network requests, Chromium's own output and the agent's log
lines all become `LogEntry`s here; `/v1/logs/stream` replays the ring to a new subscriber and
then follows it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

from viper_protocol.models.browser import LogEntry, LogLevel, LogSource
from viper_protocol.models.common import JSONObject

logger = logging.getLogger(__name__)

SUBSCRIBER_QUEUE = 1000


class LogSubscription:
    """One subscriber's bounded queue; entries that do not fit are dropped and counted."""

    def __init__(self, history: list[LogEntry]) -> None:
        self.queue: asyncio.Queue[LogEntry | None] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self.dropped = 0
        for entry in history[-SUBSCRIBER_QUEUE:]:
            self.queue.put_nowait(entry)

    def offer(self, entry: LogEntry | None) -> None:
        """Queue `entry` without blocking (None ends the stream)."""
        try:
            self.queue.put_nowait(entry)
        except asyncio.QueueFull:
            self.dropped += 1

    async def __aiter__(self) -> AsyncIterator[LogEntry]:
        while True:
            entry = await self.queue.get()
            if entry is None:
                return
            yield entry


class LogHub:
    """Numbers entries, keeps the last `history` of them and fans them out.

    Publishing never blocks and never raises: a slow subscriber loses entries, not the agent.
    """

    def __init__(self, history: int = 1000) -> None:
        self._ring: collections.deque[LogEntry] = collections.deque(maxlen=history)
        self._subscribers: set[LogSubscription] = set()
        self._seq = 0
        self.closed = False

    def publish(
        self,
        source: LogSource,
        level: LogLevel,
        message: str,
        *,
        target: str | None = None,
        data: JSONObject | None = None,
    ) -> LogEntry:
        """Record one entry and hand it to every subscriber."""
        self._seq += 1
        entry = LogEntry(
            seq=self._seq,
            timestamp=datetime.now(UTC),
            source=source,
            level=level,
            message=message,
            target=target,
            data=dict(data or {}),
        )
        self._ring.append(entry)
        for sub in self._subscribers:
            sub.offer(entry)
        return entry

    def history(self, after: int = 0) -> list[LogEntry]:
        """Entries in the ring whose `seq` is greater than `after`."""
        return [e for e in self._ring if e.seq > after]

    @contextlib.contextmanager
    def subscribe(self, after: int = 0) -> Iterator[LogSubscription]:
        """A subscription that first yields the history after `after`, then live entries."""
        sub = LogSubscription(self.history(after))
        if self.closed:
            sub.offer(None)
        self._subscribers.add(sub)
        try:
            yield sub
        finally:
            self._subscribers.discard(sub)

    def close(self) -> None:
        """End every subscription (agent shutdown)."""
        self.closed = True
        for sub in self._subscribers:
            sub.offer(None)


_LEVELS = {
    logging.DEBUG: LogLevel.DEBUG,
    logging.INFO: LogLevel.INFO,
    logging.WARNING: LogLevel.WARNING,
}


class HubHandler(logging.Handler):
    """Copies the agent's own log records into the hub as `agent` entries."""

    def __init__(self, hub: LogHub) -> None:
        super().__init__(logging.INFO)
        self.hub = hub

    def emit(self, record: logging.LogRecord) -> None:
        level = _LEVELS.get(record.levelno, LogLevel.ERROR)
        try:
            message = record.getMessage()
        except Exception:  # a bad %-format must not break logging
            message = str(record.msg)
        self.hub.publish(LogSource.AGENT, level, message, data={"logger": record.name})
