"""Navigation: go to a URL, move in history, reload, wait for a navigation, emulation.

A `NavigationWatch` listens to one page session from before the action starts, collecting
lifecycle events per loader id, main-frame navigations and document response statuses, so no
event can slip by between sending a command and waiting for its effect.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from types import TracebackType

from viper_agent.browser import Page
from viper_agent.cdp import CDPConnectionClosed, CDPEvent
from viper_agent.cdp.generated import network
from viper_agent.cdp.generated import page as cdp_page
from viper_agent.ops.script import evaluate
from viper_protocol.errors import InvalidState, NavigationFailed
from viper_protocol.models.browser import (
    HistoryRequest,
    NavigateRequest,
    NavigationResult,
    NavigationState,
    WaitUntil,
)

logger = logging.getLogger(__name__)

LIFECYCLE = {
    WaitUntil.LOAD: "load",
    WaitUntil.DOMCONTENTLOADED: "DOMContentLoaded",
    WaitUntil.NETWORKIDLE: "networkIdle",
}


class NavigationWatch:
    """Collects one page's navigation events while an action runs (a context manager)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.lifecycle: dict[str, set[str]] = collections.defaultdict(set)
        self.status: dict[str, int] = {}
        self.navigations: list[cdp_page.FrameNavigated] = []
        self.same_document = 0
        self._changed = asyncio.Event()
        self._remove: Callable[[], None] | None = None

    def __enter__(self) -> NavigationWatch:
        self._remove = self.page.session.connection.add_listener(self._on_event)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._remove is not None:
            self._remove()

    def _on_event(self, event: CDPEvent) -> None:
        if event.session_id != self.page.session.session_id:
            return
        ev = event.event
        if isinstance(ev, cdp_page.LifecycleEvent):
            self.lifecycle[ev.loader_id].add(ev.name)
        elif isinstance(ev, cdp_page.FrameNavigated) and ev.frame.parent_id is None:
            self.navigations.append(ev)
        elif isinstance(ev, cdp_page.NavigatedWithinDocument):
            self.same_document += 1
        elif (
            isinstance(ev, network.ResponseReceived)
            and ev.type == "Document"
            and ev.loader_id is not None
        ):
            self.status.setdefault(ev.loader_id, ev.response.status)
        else:
            return
        self._changed.set()

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Wait until `predicate()` holds (checked after every collected event).

        Raises:
            CDPConnectionClosed: Chromium went away meanwhile.
        """
        closed = self.page.session.connection.closed
        while not predicate():
            if closed.is_set():
                raise CDPConnectionClosed("Chromium went away during the navigation")
            self._changed.clear()
            waiters = {
                asyncio.ensure_future(self._changed.wait()),
                asyncio.ensure_future(closed.wait()),
            }
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def loaded(self, loader_id: str, wait_until: WaitUntil) -> None:
        """Wait for `wait_until` of the document `loader_id`."""
        name = LIFECYCLE[wait_until]
        await self.until(lambda: name in self.lifecycle[loader_id])

    async def next_navigation(self, wait_until: WaitUntil, after: int = 0) -> str | None:
        """Wait for a main-frame navigation (or a same-document one) and then its readiness.

        Returns the new document's loader id (None for a same-document navigation).
        """
        await self.until(lambda: len(self.navigations) > after or self.same_document > 0)
        if len(self.navigations) <= after:
            return None
        nav = self.navigations[after]
        if nav.type == "BackForwardCacheRestore":
            return nav.frame.loader_id  # restored whole: no lifecycle events follow
        await self.loaded(nav.frame.loader_id, wait_until)
        return nav.frame.loader_id


async def current(page: Page) -> tuple[str, str]:
    """The page's URL and title."""
    obj = await evaluate(page, "[location.href, document.title]")
    value = obj.value if isinstance(obj.value, list) else ["", ""]
    return str(value[0]), str(value[1])


async def _result(page: Page, status: int | None) -> NavigationResult:
    url, title = await current(page)
    return NavigationResult(url=url, title=title, status=status, target=page.target_id)


async def navigate(page: Page, req: NavigateRequest) -> NavigationResult:
    """Load `req.url` and wait for `req.wait_until`.

    Raises:
        NavigationFailed: the browser could not load the URL.
    """
    with NavigationWatch(page) as watch:
        res = await page.session.execute(
            cdp_page.navigate(url=req.url, referrer=req.referrer), timeout=req.timeout_ms / 1000
        )
        if res.error_text:
            raise NavigationFailed(
                f"cannot load {req.url}: {res.error_text}",
                {"url": req.url, "error": res.error_text},
            )
        status = None
        if res.loader_id is not None:
            await watch.loaded(res.loader_id, req.wait_until)
            status = watch.status.get(res.loader_id)
    return await _result(page, status)


async def state(page: Page) -> NavigationState:
    """Current URL, title and history position."""
    history = await page.session.execute(cdp_page.get_navigation_history())
    url, title = await current(page)
    return NavigationState(
        url=url,
        title=title,
        target=page.target_id,
        can_go_back=history.current_index > 0,
        can_go_forward=history.current_index < len(history.entries) - 1,
    )


async def history(page: Page, req: HistoryRequest, step: int) -> NavigationResult:
    """Go `step` entries back (-1) or forward (+1) in history.

    Raises:
        InvalidState: there is no entry in that direction.
    """
    hist = await page.session.execute(cdp_page.get_navigation_history())
    index = hist.current_index + step
    if not 0 <= index < len(hist.entries):
        where = "back" if step < 0 else "forward"
        raise InvalidState(
            f"there is no history entry to go {where} to",
            state=f"at history entry {hist.current_index + 1} of {len(hist.entries)}",
            required=[f"a history entry to go {where} to"],
        )
    with NavigationWatch(page) as watch:
        await page.session.execute(
            cdp_page.navigate_to_history_entry(entry_id=hist.entries[index].id)
        )
        loader = await watch.next_navigation(req.wait_until)
    return await _result(page, watch.status.get(loader) if loader else None)


async def reload(page: Page, req: HistoryRequest) -> NavigationResult:
    """Reload the page."""
    with NavigationWatch(page) as watch:
        await page.session.execute(cdp_page.reload(ignore_cache=req.ignore_cache))
        loader = await watch.next_navigation(req.wait_until)
    return await _result(page, watch.status.get(loader) if loader else None)


async def wait_next(page: Page, req: HistoryRequest) -> NavigationResult:
    """Wait for the page's next navigation (started by a click, a script, a redirect...)."""
    with NavigationWatch(page) as watch:
        loader = await watch.next_navigation(req.wait_until)
    return await _result(page, watch.status.get(loader) if loader else None)
