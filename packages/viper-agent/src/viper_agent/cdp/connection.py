"""One CDP connection on an aiohttp WebSocket: ids to futures, flattened sessions, event fan-out.

Commands are the generated sans-I/O generators: `execute(cmd)` sends what `cmd` yields and
feeds the answer back in to get the typed result. Every target attached with `flatten=True`
shares this one socket; its messages carry a `sessionId`, and `CDPSession` stamps it on. Events
go to every listener as `CDPEvent`s (method, raw params, session id and the typed event when
one is generated). When Chromium answers with an error the caller gets `CDPError`; when the
socket goes away every pending and future call gets `CDPConnectionClosed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable, Generator
from typing import Any, TypeVar

import aiohttp
import attrs

from viper_agent.cdp.generated import parse_event

logger = logging.getLogger(__name__)

T = TypeVar("T")
Command = Generator[dict[str, Any], dict[str, Any], T]
EventListener = Callable[["CDPEvent"], None]

MAX_MESSAGE = 512 * 1024 * 1024  # screenshots of big pages run to hundreds of MiB
DEFAULT_TIMEOUT = 30.0


class CDPError(Exception):
    """Chromium answered a command with an error."""

    def __init__(self, method: str, code: int, message: str, data: object = None) -> None:
        super().__init__(f"{method}: {message} ({code})")
        self.method = method
        self.code = code
        self.message = message
        self.data = data


class CDPConnectionClosed(Exception):
    """The WebSocket to Chromium is gone (Chromium exited, crashed or closed it)."""


@attrs.frozen
class CDPEvent:
    """One event message: its method, raw params, session and typed form (when generated)."""

    method: str
    params: dict[str, Any]
    session_id: str | None
    event: object | None


class CDPConnection:
    """A CDP client on one WebSocket. Create with `connect()`, end with `close()`."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, http: aiohttp.ClientSession) -> None:
        self._ws = ws
        self._http = http
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[str, asyncio.Future[dict[str, Any]]]] = {}
        self._listeners: list[EventListener] = []
        self.closed = asyncio.Event()
        self.close_reason = ""
        self._reader = asyncio.create_task(self._read(), name="cdp-reader")

    @classmethod
    async def connect(cls, url: str, *, timeout: float = 10.0) -> CDPConnection:
        """Open the WebSocket at `url` (a browser or page DevTools endpoint).

        Raises:
            CDPConnectionClosed: the endpoint could not be reached.
        """
        http = aiohttp.ClientSession()
        try:
            ws = await asyncio.wait_for(
                http.ws_connect(url, max_msg_size=MAX_MESSAGE, compress=0), timeout
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            await http.close()
            raise CDPConnectionClosed(f"cannot connect to {url}: {exc}") from exc
        return cls(ws, http)

    # --- commands ---------------------------------------------------------------------------

    async def execute(
        self, cmd: Command[T], *, session_id: str | None = None, timeout: float | None = None
    ) -> T:
        """Run a generated command and return its typed result.

        Raises:
            CDPError: Chromium answered with an error.
            CDPConnectionClosed: the connection is or went away.
            TimeoutError: no answer within `timeout` seconds (default 30).
        """
        request = next(cmd)
        result = await self.send(
            request["method"], request.get("params"), session_id=session_id, timeout=timeout
        )
        try:
            cmd.send(result)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        raise RuntimeError(f"{request['method']}: the command generator did not finish")

    async def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session_id: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send one raw command and return its raw `result`.

        Raises:
            CDPError, CDPConnectionClosed, TimeoutError: as `execute`.
        """
        if self.closed.is_set():
            raise CDPConnectionClosed(self.close_reason or "connection closed")
        msg_id = next(self._ids)
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = (method, future)
        try:
            await self._ws.send_str(json.dumps(message))
            async with asyncio.timeout(DEFAULT_TIMEOUT if timeout is None else timeout):
                return await future
        except (ConnectionError, aiohttp.ClientError) as exc:
            raise CDPConnectionClosed(f"{method}: {exc}") from exc
        finally:
            self._pending.pop(msg_id, None)

    def session(self, session_id: str) -> CDPSession:
        """A handle that sends commands to one flattened target session."""
        return CDPSession(self, session_id)

    # --- events -----------------------------------------------------------------------------

    def add_listener(self, listener: EventListener) -> Callable[[], None]:
        """Call `listener(event)` for every event; returns a function that removes it."""
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    async def wait_for(
        self, predicate: Callable[[CDPEvent], bool], timeout: float | None = None
    ) -> CDPEvent:
        """The first event matching `predicate` from now on.

        Raises:
            TimeoutError: none within `timeout`.
            CDPConnectionClosed: the connection went away first.
        """
        future: asyncio.Future[CDPEvent] = asyncio.get_running_loop().create_future()

        def listener(event: CDPEvent) -> None:
            if not future.done() and predicate(event):
                future.set_result(event)

        remove = self.add_listener(listener)
        closed: asyncio.Future[Any] = asyncio.ensure_future(self.closed.wait())
        waiting: asyncio.Future[Any] = future
        try:
            async with asyncio.timeout(timeout):
                await asyncio.wait({waiting, closed}, return_when=asyncio.FIRST_COMPLETED)
            if not future.done():
                raise CDPConnectionClosed(self.close_reason or "connection closed")
            return future.result()
        finally:
            remove()
            closed.cancel()

    # --- lifecycle --------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the socket and fail every pending call."""
        self.close_reason = self.close_reason or "closed by the agent"
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        self._finish(self.close_reason)
        await self._http.close()

    def _finish(self, reason: str) -> None:
        if not self.close_reason:
            self.close_reason = reason
        self.closed.set()
        for method, future in self._pending.values():
            if not future.done():
                future.set_exception(CDPConnectionClosed(f"{method}: {self.close_reason}"))
        self._pending.clear()

    async def _read(self) -> None:
        """Bottom half: route answers to their futures and events to listeners."""
        try:
            async for msg in self._ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    self._dispatch(json.loads(msg.data))
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    logger.warning("CDP socket error: %s", self._ws.exception())
                    break
        except Exception:
            logger.exception("CDP reader failed")
        finally:
            self._finish("Chromium closed the DevTools connection")

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "id" in message:
            entry = self._pending.get(message["id"])
            if entry is None:
                return
            method, future = entry
            if future.done():
                return
            error = message.get("error")
            if error is not None:
                future.set_exception(
                    CDPError(
                        method, error.get("code", 0), error.get("message", ""), error.get("data")
                    )
                )
            else:
                future.set_result(message.get("result", {}))
            return
        name = message.get("method")
        if not isinstance(name, str):
            return
        params = message.get("params") or {}
        try:
            typed = parse_event(name, params)
        except (KeyError, TypeError, ValueError):
            logger.debug("cannot parse %s", name, exc_info=True)
            typed = None
        event = CDPEvent(name, params, message.get("sessionId"), typed)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                logger.exception("CDP event listener failed on %s", name)


class CDPSession:
    """Commands for one flattened target session on a shared connection."""

    def __init__(self, connection: CDPConnection, session_id: str) -> None:
        self.connection = connection
        self.session_id = session_id

    async def execute(self, cmd: Command[T], *, timeout: float | None = None) -> T:
        """Run `cmd` in this session (see `CDPConnection.execute`)."""
        return await self.connection.execute(cmd, session_id=self.session_id, timeout=timeout)

    async def send(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Send a raw command in this session."""
        return await self.connection.send(
            method, params, session_id=self.session_id, timeout=timeout
        )
