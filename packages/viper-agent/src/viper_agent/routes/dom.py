"""DOM routes: GET /v1/dom and POST /v1/dom/{click,type,wait}."""

from __future__ import annotations

import time

from aiohttp import web

from viper_agent.keys import browser_key
from viper_agent.ops import dom
from viper_agent.web import deadline, json_reply, read_body, read_query
from viper_protocol.models.browser import (
    ClickRequest,
    DomActionResult,
    DomQuery,
    TypeRequest,
    WaitRequest,
)

routes = web.RouteTableDef()

# The action's own polling ends at timeout_ms with a precise error; the outer deadline is a
# backstop a little later for a browser that stops answering altogether.
GRACE_MS = 2_000


@routes.get("/v1/dom")
async def query(request: web.Request) -> web.Response:
    """Read the first element matching `selector` (or all of them with `all=true`)."""
    q = read_query(request, DomQuery)
    async with deadline(q.timeout_ms, f"reading {q.selector!r}"):
        page = await request.app[browser_key].page(q.target)
        return json_reply(await dom.query(page, q))


def _done(selector: str, target: str, started: float) -> web.Response:
    elapsed = round((time.monotonic() - started) * 1000, 1)
    return json_reply(DomActionResult(selector=selector, target=target, elapsed_ms=elapsed))


@routes.post("/v1/dom/click")
async def click(request: web.Request) -> web.Response:
    """Click the element's centre once it is visible."""
    body = await read_body(request, ClickRequest)
    started = time.monotonic()
    async with deadline(body.timeout_ms + GRACE_MS, f"clicking {body.selector!r}"):
        page = await request.app[browser_key].page(body.target)
        await dom.click(page, body)
    return _done(body.selector, page.target_id, started)


@routes.post("/v1/dom/type")
async def type_text(request: web.Request) -> web.Response:
    """Focus the element, clear it if asked, and type the text."""
    body = await read_body(request, TypeRequest)
    started = time.monotonic()
    budget = body.timeout_ms + GRACE_MS + body.delay_ms * len(body.text)
    async with deadline(budget, f"typing into {body.selector!r}"):
        page = await request.app[browser_key].page(body.target)
        await dom.type_text(page, body)
    return _done(body.selector, page.target_id, started)


@routes.post("/v1/dom/wait")
async def wait(request: web.Request) -> web.Response:
    """Wait until the element is visible, attached, hidden or detached."""
    body = await read_body(request, WaitRequest)
    started = time.monotonic()
    async with deadline(body.timeout_ms + GRACE_MS, f"waiting for {body.selector!r}"):
        page = await request.app[browser_key].page(body.target)
        await dom.wait_for(page, body.selector, body.state, body.timeout_ms)
    return _done(body.selector, page.target_id, started)
