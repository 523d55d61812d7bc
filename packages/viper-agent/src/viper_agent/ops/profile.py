"""Profile export and import: cookies, localStorage and sessionStorage per origin, user agent.

Cookies go through the browser-wide Storage domain. Web storage lives in documents, so for an
origin no tab shows, the agent opens a scratch tab whose requests are answered by the agent
itself (Fetch interception serves an empty page: no request reaches the network and no cookie
changes) and reads or writes the storage there. sessionStorage belongs to a tab; an imported
one is seeded into every tab that opens the origin with empty session storage, by a script
that runs before the page's own.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from viper_agent.browser import Browser, Page, UserAgentOverride, apply_user_agent, origin_of
from viper_agent.cdp import CDPConnectionClosed, CDPError, CDPEvent
from viper_agent.cdp.generated import fetch, network, storage
from viper_agent.cdp.generated import page as cdp_page
from viper_agent.ops.navigation import NavigationWatch
from viper_agent.ops.script import evaluate, js_call
from viper_protocol.errors import ValidationFailed
from viper_protocol.models.browser import (
    Cookie,
    OriginStorage,
    Profile,
    ProfileImportResult,
    SameSite,
    WaitUntil,
)

logger = logging.getLogger(__name__)

_BLANK = base64.b64encode(b"<!doctype html><html><head></head><body></body></html>").decode()

_READ = """(withSession) => ({
  local: Object.fromEntries(Object.entries(localStorage)),
  session: withSession ? Object.fromEntries(Object.entries(sessionStorage)) : {},
})"""

_WRITE_LOCAL = (
    """(items) => { for (const [k, v] of Object.entries(items)) localStorage.setItem(k, v); }"""
)

_SEED_SESSION = """(() => {{
  const origin = {origin}, items = {items};
  if (location.origin !== origin || sessionStorage.length !== 0) return;
  for (const [k, v] of Object.entries(items)) sessionStorage.setItem(k, v);
}})()"""


def _cookie_out(c: network.Cookie) -> Cookie:
    same_site = SameSite(c.same_site) if c.same_site in {s.value for s in SameSite} else None
    return Cookie(
        name=c.name,
        value=c.value,
        domain=c.domain,
        path=c.path,
        expires=None if c.session or c.expires < 0 else c.expires,
        http_only=c.http_only,
        secure=c.secure,
        same_site=same_site,
    )


def _cookie_in(c: Cookie) -> network.CookieParam:
    return network.CookieParam(
        name=c.name,
        value=c.value,
        domain=c.domain,
        path=c.path,
        expires=c.expires,
        http_only=c.http_only,
        secure=c.secure,
        same_site=c.same_site.value if c.same_site is not None else None,
    )


@contextlib.asynccontextmanager
async def origin_tab(browser: Browser, origin: str) -> AsyncIterator[Page]:
    """A scratch tab showing an empty document of `origin`, served by the agent itself."""
    page = await browser.new_page("about:blank")
    conn = page.session.connection
    tasks: set[asyncio.Task[None]] = set()

    async def fulfil(request_id: str) -> None:
        with contextlib.suppress(CDPError, CDPConnectionClosed):
            await page.session.execute(
                fetch.fulfill_request(
                    request_id=request_id,
                    response_code=200,
                    response_headers=[fetch.HeaderEntry(name="Content-Type", value="text/html")],
                    body=_BLANK,
                )
            )

    def on_event(event: CDPEvent) -> None:
        if event.session_id == page.session.session_id and isinstance(
            event.event, fetch.RequestPaused
        ):
            task = asyncio.create_task(fulfil(event.event.request_id), name="profile-fulfil")
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    remove = conn.add_listener(on_event)
    try:
        await page.session.execute(fetch.enable(patterns=[fetch.RequestPattern(url_pattern="*")]))
        with NavigationWatch(page) as watch:
            res = await page.session.execute(cdp_page.navigate(url=origin + "/"))
            if res.error_text or res.loader_id is None:
                raise ValidationFailed(
                    f"cannot open origin {origin}: {res.error_text}",
                    {"errors": [f"cannot open this origin @ $.origins[{origin!r}]"]},
                )
            await watch.loaded(res.loader_id, WaitUntil.LOAD)
        yield page
    finally:
        remove()
        for task in tasks:
            task.cancel()
        with contextlib.suppress(CDPError, CDPConnectionClosed, Exception):
            await browser.close_page(page.target_id)


async def _read_storage(page: Page, with_session: bool) -> tuple[dict[str, str], dict[str, str]]:
    found: Any = (await evaluate(page, js_call(_READ, with_session))).value
    local = {str(k): str(v) for k, v in dict(found["local"]).items()}
    session = {str(k): str(v) for k, v in dict(found["session"]).items()}
    return local, session


async def export_profile(browser: Browser) -> Profile:
    """Cookies, web storage of every origin the browser has shown, and the user agent."""
    conn = browser.conn()
    cookies = (await conn.execute(storage.get_cookies())).cookies
    open_pages: dict[str, str] = {}
    for info in browser.pages():
        origin = origin_of(info.url)
        if origin is not None:
            open_pages.setdefault(origin, info.target_id)
    origins: list[OriginStorage] = []
    for origin in sorted(browser.visited_origins | set(open_pages)):
        if origin in open_pages:
            local, session = await _read_storage(await browser.page(open_pages[origin]), True)
        else:
            async with origin_tab(browser, origin) as page:
                local, session = await _read_storage(page, False)
        if local or session:
            origins.append(
                OriginStorage(origin=origin, local_storage=local, session_storage=session)
            )
    override = browser.user_agent_override
    user_agent = override.user_agent if override is not None else None
    if user_agent is None and browser.version is not None:
        user_agent = browser.version.user_agent
    return Profile(
        cookies=[_cookie_out(c) for c in cookies], origins=origins, user_agent=user_agent
    )


async def import_profile(browser: Browser, profile: Profile) -> ProfileImportResult:
    """Set the cookies, web storage and user agent of `profile` in this browser.

    Raises:
        ValidationFailed: Chromium refused a cookie or an origin.
    """
    conn = browser.conn()
    for index, entry in enumerate(profile.origins):
        if origin_of(entry.origin) != entry.origin.rstrip("/"):
            raise ValidationFailed(
                "origins must be http(s)://host[:port]",
                {"errors": [f"not an http(s) origin @ $.origins[{index}].origin"]},
            )
    if profile.cookies:
        try:
            await conn.execute(
                storage.set_cookies(cookies=[_cookie_in(c) for c in profile.cookies])
            )
        except CDPError as exc:
            raise ValidationFailed(
                f"Chromium refused the cookies: {exc.message}",
                {"errors": [f"{exc.message} @ $.cookies"]},
            ) from None
    for item in profile.origins:
        origin = item.origin.rstrip("/")
        if item.local_storage:
            async with origin_tab(browser, origin) as page:
                await evaluate(page, js_call(_WRITE_LOCAL, item.local_storage))
        if item.session_storage:
            source = _SEED_SESSION.format(
                origin=json.dumps(origin), items=json.dumps(item.session_storage)
            )
            await browser.add_new_document_script(source)
    if profile.user_agent:
        override = UserAgentOverride(user_agent=profile.user_agent)
        browser.user_agent_override = override
        for info in browser.pages():
            with contextlib.suppress(CDPError):
                await apply_user_agent((await browser.page(info.target_id)).session, override)
    return ProfileImportResult(cookies=len(profile.cookies), origins=len(profile.origins))
