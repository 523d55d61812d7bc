"""A small asyncio client for QEMU's monitor protocol (QMP) on a unix socket.

QMP is line-delimited JSON: the server greets with `{"QMP": ...}`, the client negotiates with
`qmp_capabilities`, then sends `{"execute", "arguments", "id"}` and gets `{"return"}` or
`{"error"}` with the same id; asynchronous `{"event"}` messages may arrive at any time. One
reader task (the bottom half) dispatches answers to waiting futures and events to a queue,
in the manner of `qemu.qmp.QMPClient`, which this mirrors in about a tenth of the size.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_LINE_LIMIT = 4 * 1024 * 1024


class QMPError(Exception):
    """QEMU answered a command with an error (`error_class` and `desc` from the reply)."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(f"{command}: {error_class}: {desc}")
        self.error_class = error_class
        self.desc = desc


class QMPClient:
    """One QMP connection: `connect`, `execute`, `events`, `close`.

    Raises `ConnectionError` from `execute` once the connection is gone (QEMU exited).
    """

    def __init__(self, name: str = "qmp") -> None:
        self.name = name
        self.greeting: dict[str, Any] = {}
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=256)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._closed = asyncio.Event()

    @property
    def connected(self) -> bool:
        """True while the connection is open."""
        return self._writer is not None and not self._closed.is_set()

    async def connect(self, path: Path, *, timeout: float = 5.0) -> None:
        """Connect to the socket at `path`, read the greeting and negotiate capabilities.

        Raises:
            OSError: the socket cannot be connected.
            TimeoutError: QEMU did not greet or negotiate within `timeout`.
            QMPError: negotiation was refused.
        """
        async with asyncio.timeout(timeout):
            self._reader, self._writer = await asyncio.open_unix_connection(
                str(path), limit=_LINE_LIMIT
            )
            line = await self._reader.readline()
            if not line:
                raise ConnectionError(f"{path}: closed before the QMP greeting")
            self.greeting = json.loads(line)
        self._task = asyncio.get_running_loop().create_task(
            self._read_loop(), name=f"qmp-reader:{self.name}"
        )
        await self.execute("qmp_capabilities", timeout=timeout)

    async def execute(
        self, command: str, arguments: dict[str, Any] | None = None, *, timeout: float = 5.0
    ) -> Any:
        """Run one command and return its `return` value.

        Raises:
            QMPError: QEMU answered with an error.
            ConnectionError: the connection is closed (or closes before the answer).
            TimeoutError: no answer within `timeout`.
        """
        if self._writer is None or self._closed.is_set():
            raise ConnectionError(f"{self.name}: QMP connection is closed")
        ident = next(self._ids)
        message: dict[str, Any] = {"execute": command, "id": ident}
        if arguments:
            message["arguments"] = arguments
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        try:
            self._writer.write(json.dumps(message).encode() + b"\n")
            async with asyncio.timeout(timeout):
                await self._writer.drain()
                reply: dict[str, Any] = await future
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ConnectionError(f"{self.name}: {command}: {exc}") from exc
        finally:
            self._pending.pop(ident, None)
        if "error" in reply:
            err = reply["error"]
            raise QMPError(command, str(err.get("class")), str(err.get("desc")))
        return reply.get("return")

    async def _read_loop(self) -> None:
        """Bottom half: dispatch answers and events until EOF; then fail what still waits."""
        assert self._reader is not None
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                try:
                    msg = json.loads(line)
                except ValueError:
                    logger.warning("%s: bad QMP line %r", self.name, line[:200])
                    continue
                if "event" in msg:
                    if self.events.full():
                        self.events.get_nowait()  # keep the newest events
                    self.events.put_nowait(msg)
                    continue
                future = self._pending.get(msg.get("id", -1))
                if future is not None and not future.done():
                    future.set_result(msg)
        except (ConnectionError, OSError) as exc:
            logger.debug("%s: QMP connection lost: %s", self.name, exc)
        finally:
            self._closed.set()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError(f"{self.name}: QMP connection closed"))

    async def wait_closed(self) -> None:
        """Wait until the peer closes the connection (QEMU exited)."""
        await self._closed.wait()

    async def close(self) -> None:
        """Close the connection and stop the reader (idempotent)."""
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await self._writer.wait_closed()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._closed.set()
