"""The agent's view of the browser: one CDP connection, its page targets and their sessions.

`Browser` connects to the supervised Chromium's browser endpoint, discovers page targets,
attaches to each with a flattened session (Page, Runtime and Network enabled, lifecycle events
on) and turns their events into log entries: console messages, page errors, network requests.
When Chromium restarts it connects again. Route handlers get a `Page` (a target id and its
session) from `page(target)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import urlsplit

import attrs

from viper_agent.cdp import CDPConnection, CDPConnectionClosed, CDPError, CDPEvent, CDPSession
from viper_agent.cdp.generated import browser as cdp_browser
from viper_agent.cdp.generated import emulation, network, page, runtime, target
from viper_agent.logs import LogHub
from viper_agent.supervisor import ChromiumSupervisor
from viper_protocol.errors import BrowserUnavailable, NotFound
from viper_protocol.models.browser import BrowserStatus, LogLevel, LogSource

logger = logging.getLogger(__name__)

_CONSOLE_LEVELS = {
    "debug": LogLevel.DEBUG,
    "warning": LogLevel.WARNING,
    "error": LogLevel.ERROR,
    "assert": LogLevel.ERROR,
}


@attrs.frozen
class Page:
    """A page target the agent is attached to."""

    target_id: str
    session: CDPSession


@attrs.frozen
class UserAgentOverride:
    """A user agent applied to every page (from an imported profile)."""

    user_agent: str
    accept_language: str | None = None
    platform: str | None = None


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` of an http(s) URL, else None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def _log_attach_failure(future: asyncio.Task[CDPSession]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.debug("attaching to a tab failed: %s", future.exception())


def _remote_text(obj: runtime.RemoteObject) -> str:
    if obj.value is not None:
        return obj.value if isinstance(obj.value, str) else repr(obj.value)
    if obj.unserializable_value is not None:
        return obj.unserializable_value
    if obj.description is not None:
        return obj.description
    return obj.type


class Browser:
    """Owns the CDP connection to the supervised Chromium and the page sessions on it."""

    def __init__(self, supervisor: ChromiumSupervisor, hub: LogHub) -> None:
        self.supervisor = supervisor
        self.hub = hub
        self.connection: CDPConnection | None = None
        self.version: cdp_browser.GetVersionResult | None = None
        self.visited_origins: set[str] = set()
        self.user_agent_override: UserAgentOverride | None = None
        self.new_document_scripts: list[str] = []
        self._pages: dict[str, target.TargetInfo] = {}
        self._sessions: dict[str, asyncio.Task[CDPSession]] = {}
        self._session_targets: dict[str, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connected_generation = 0
        self._stopping = False

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to the running Chromium and follow its restarts.

        Raises:
            CDPConnectionClosed: the first connection failed.
        """
        await self._connect()
        self.supervisor.add_listener(self._on_status)

    async def stop(self) -> None:
        """Stop following Chromium and close the connection."""
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._disconnect()

    def _spawn(self, coro: Any, name: str) -> None:
        task: asyncio.Task[Any] = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_status(self, status: BrowserStatus) -> None:
        if self._stopping:
            return
        if status is BrowserStatus.RUNNING:
            self._spawn(self._reconnect(), "cdp-reconnect")
        elif status is BrowserStatus.CRASHED:
            self._spawn(self._disconnect(), "cdp-disconnect")

    async def _reconnect(self) -> None:
        """Bottom half: connect again after a Chromium restart."""
        await self._disconnect()
        try:
            await self._connect()
        except (CDPConnectionClosed, CDPError, TimeoutError) as exc:
            logger.error("cannot reconnect to the restarted Chromium: %s", exc)
            return
        logger.info("reconnected to Chromium pid %s", self.supervisor.pid)

    async def _connect(self) -> None:
        url = self.supervisor.browser_ws_url
        if url is None:
            raise CDPConnectionClosed("Chromium has no DevTools endpoint")
        conn = await CDPConnection.connect(url)
        self.connection = conn
        conn.add_listener(self._on_event)
        try:
            self.version = await conn.execute(cdp_browser.get_version())
            await conn.execute(target.set_discover_targets(discover=True))
            for info in (await conn.execute(target.get_targets())).target_infos:
                self._add_target(info)
        except BaseException:
            await self._disconnect()
            raise

    async def _disconnect(self) -> None:
        conn, self.connection = self.connection, None
        self._pages.clear()
        for future in self._sessions.values():
            future.cancel()
        self._sessions.clear()
        self._session_targets.clear()
        if conn is not None:
            await conn.close()

    # --- pages ------------------------------------------------------------------------------

    def conn(self) -> CDPConnection:
        """The live connection.

        Raises:
            BrowserUnavailable: Chromium is not running or not connected (yet).
        """
        conn = self.connection
        if conn is None or conn.closed.is_set():
            raise BrowserUnavailable(
                f"Chromium is {self.supervisor.status.value}",
                {"status": self.supervisor.status.value},
            )
        return conn

    def pages(self) -> list[target.TargetInfo]:
        """Page targets in the order they appeared."""
        return list(self._pages.values())

    async def page(self, target_id: str | None = None) -> Page:
        """The attached page for `target_id` (the first page when None; one is opened if none).

        Raises:
            NotFound: no page target with that id.
            BrowserUnavailable: Chromium is not running.
        """
        conn = self.conn()
        if target_id is None:
            if not self._pages:
                created = await conn.execute(target.create_target(url="about:blank"))
                self._add_target_id(created.target_id)
            target_id = next(iter(self._pages))
        if target_id not in self._pages:
            raise NotFound(f"no tab with target id {target_id!r}", {"target": target_id})
        attaching = self._sessions.get(target_id)
        failed = (
            attaching is not None
            and attaching.done()
            and (attaching.cancelled() or attaching.exception() is not None)
        )
        if attaching is None or failed:
            # The first attach failed (the tab was busy or just replaced): try once more.
            self._sessions.pop(target_id, None)
            self._add_target(self._pages[target_id])
            attaching = self._sessions[target_id]
        session = await asyncio.shield(attaching)
        return Page(target_id, session)

    async def new_page(self, url: str) -> Page:
        """Open a tab at `url` and attach to it."""
        conn = self.conn()
        created = await conn.execute(target.create_target(url=url))
        self._add_target_id(created.target_id)
        return await self.page(created.target_id)

    async def close_page(self, target_id: str) -> None:
        """Close a tab.

        Raises:
            NotFound: no such tab.
        """
        conn = self.conn()
        if target_id not in self._pages:
            raise NotFound(f"no tab with target id {target_id!r}", {"target": target_id})
        await conn.execute(target.close_target(target_id=target_id))
        self._pages.pop(target_id, None)
        future = self._sessions.pop(target_id, None)
        if future is not None:
            future.cancel()

    async def add_new_document_script(self, source: str) -> None:
        """Run `source` before the page's own scripts in every document of every tab, and now."""
        self.new_document_scripts.append(source)
        for info in self.pages():
            session = (await self.page(info.target_id)).session
            with contextlib.suppress(CDPError):
                await session.execute(page.add_script_to_evaluate_on_new_document(source=source))
                await session.execute(runtime.evaluate(expression=source))

    def _add_target_id(self, target_id: str) -> None:
        if target_id not in self._pages:
            info = target.TargetInfo(
                target_id=target_id,
                type="page",
                title="",
                url="",
                attached=True,
                can_access_opener=False,
            )
            self._add_target(info)

    def _add_target(self, info: target.TargetInfo) -> None:
        if info.type != "page":
            return
        self._pages[info.target_id] = info
        if info.target_id not in self._sessions and self.connection is not None:
            future = asyncio.create_task(
                self._attach(self.connection, info.target_id), name=f"attach:{info.target_id}"
            )
            future.add_done_callback(_log_attach_failure)
            self._sessions[info.target_id] = future

    async def _attach(self, conn: CDPConnection, target_id: str) -> CDPSession:
        attached = await conn.execute(target.attach_to_target(target_id=target_id, flatten=True))
        session = conn.session(attached.session_id)
        self._session_targets[attached.session_id] = target_id
        await session.execute(page.enable())
        await session.execute(page.set_lifecycle_events_enabled(enabled=True))
        await session.execute(runtime.enable())
        await session.execute(network.enable())
        override = self.user_agent_override
        if override is not None:
            await apply_user_agent(session, override)
        for source in self.new_document_scripts:
            await session.execute(page.add_script_to_evaluate_on_new_document(source=source))
        return session

    # --- events -----------------------------------------------------------------------------

    def _on_event(self, event: CDPEvent) -> None:
        ev = event.event
        tid = self._session_targets.get(event.session_id or "")
        if isinstance(ev, target.TargetCreated | target.TargetInfoChanged):
            self._add_target(ev.target_info)
        elif isinstance(ev, target.TargetDestroyed):
            self._pages.pop(ev.target_id, None)
            future = self._sessions.pop(ev.target_id, None)
            if future is not None and not future.done():
                future.cancel()
        elif isinstance(ev, target.TargetCrashed):
            self.hub.publish(
                LogSource.PAGE_ERROR,
                LogLevel.ERROR,
                f"tab crashed ({ev.status}, code {ev.error_code})",
                target=ev.target_id,
            )
        elif isinstance(ev, target.DetachedFromTarget):
            self._session_targets.pop(ev.session_id, None)
        elif isinstance(ev, runtime.ConsoleAPICalled):
            text = " ".join(_remote_text(a) for a in ev.args)
            self.hub.publish(
                LogSource.CONSOLE,
                _CONSOLE_LEVELS.get(ev.type, LogLevel.INFO),
                text,
                target=tid,
                data={"type": ev.type},
            )
        elif isinstance(ev, runtime.ExceptionThrown):
            details = ev.exception_details
            text = details.text
            if details.exception is not None and details.exception.description:
                text = details.exception.description
            self.hub.publish(
                LogSource.PAGE_ERROR,
                LogLevel.ERROR,
                text,
                target=tid,
                data={
                    "url": details.url,
                    "line": details.line_number,
                    "column": details.column_number,
                },
            )
        elif isinstance(ev, network.RequestWillBeSent):
            self.hub.publish(
                LogSource.NETWORK,
                LogLevel.DEBUG,
                f"{ev.request.method} {ev.request.url}",
                target=tid,
                data={
                    "event": "request",
                    "request_id": ev.request_id,
                    "method": ev.request.method,
                    "url": ev.request.url,
                    "type": ev.type,
                },
            )
        elif isinstance(ev, network.ResponseReceived):
            resp = ev.response
            level = LogLevel.WARNING if resp.status >= 400 else LogLevel.INFO
            self.hub.publish(
                LogSource.NETWORK,
                level,
                f"{resp.status} {resp.url}",
                target=tid,
                data={
                    "event": "response",
                    "request_id": ev.request_id,
                    "status": resp.status,
                    "url": resp.url,
                    "mime_type": resp.mime_type,
                    "type": ev.type,
                },
            )
        elif isinstance(ev, network.LoadingFailed):
            self.hub.publish(
                LogSource.NETWORK,
                LogLevel.WARNING,
                f"request failed: {ev.error_text}",
                target=tid,
                data={
                    "event": "failed",
                    "request_id": ev.request_id,
                    "error": ev.error_text,
                    "canceled": bool(ev.canceled),
                },
            )
        elif isinstance(ev, page.FrameNavigated):
            origin = origin_of(ev.frame.url)
            if origin is not None:
                self.visited_origins.add(origin)
        elif isinstance(ev, page.JavascriptDialogOpening) and event.session_id:
            # An unanswered dialog would block the page for every later action.
            self.hub.publish(
                LogSource.CONSOLE,
                LogLevel.WARNING,
                f"{ev.type} dialog accepted: {ev.message}",
                target=tid,
            )
            self._spawn(self._answer_dialog(event.session_id), "dialog")

    async def _answer_dialog(self, session_id: str) -> None:
        """Bottom half: accept a dialog (another client may have answered it first)."""
        with contextlib.suppress(CDPError, CDPConnectionClosed, BrowserUnavailable):
            await (
                self.conn().session(session_id).execute(page.handle_java_script_dialog(accept=True))
            )


async def apply_user_agent(session: CDPSession, override: UserAgentOverride) -> None:
    """Set the user agent (and language, platform) of one page session."""
    await session.execute(
        emulation.set_user_agent_override(
            user_agent=override.user_agent,
            accept_language=override.accept_language,
            platform=override.platform,
        )
    )
