"""Navigation routes: /v1/navigation and its history, wait and emulation actions."""

from __future__ import annotations

import attrs
from aiohttp import web

from viper_agent.browser import UserAgentOverride, apply_user_agent
from viper_agent.cdp.generated import emulation
from viper_agent.keys import browser_key
from viper_agent.ops import navigation
from viper_agent.web import deadline, json_reply, read_body
from viper_protocol.models.browser import (
    HistoryRequest,
    NavigateRequest,
    UserAgentRequest,
    ViewportRequest,
)

routes = web.RouteTableDef()


@routes.post("/v1/navigation")
async def navigate(request: web.Request) -> web.Response:
    """Load a URL; answers the final URL, title and HTTP status."""
    body = await read_body(request, NavigateRequest)
    async with deadline(body.timeout_ms, f"navigating to {body.url}"):
        page = await request.app[browser_key].page(body.target)
        return json_reply(await navigation.navigate(page, body))


@routes.get("/v1/navigation")
async def current(request: web.Request) -> web.Response:
    """The current URL, title and history position of a tab (`?target=`)."""
    page = await request.app[browser_key].page(request.query.get("target") or None)
    async with deadline(30_000, "reading the navigation state"):
        return json_reply(await navigation.state(page))


@routes.post("/v1/navigation/{action:back|forward|reload|wait}")
async def history(request: web.Request) -> web.Response:
    """Go back or forward, reload, or wait for the next navigation."""
    body = await read_body(request, HistoryRequest)
    action = request.match_info["action"]
    async with deadline(body.timeout_ms, f"navigation {action}"):
        page = await request.app[browser_key].page(body.target)
        if action == "reload":
            result = await navigation.reload(page, body)
        elif action == "wait":
            result = await navigation.wait_next(page, body)
        else:
            result = await navigation.history(page, body, -1 if action == "back" else 1)
    return json_reply(result)


@routes.post("/v1/navigation/viewport")
async def viewport(request: web.Request) -> web.Response:
    """Emulate a viewport size, scale and mobile mode; answers the applied settings."""
    body = await read_body(request, ViewportRequest)
    async with deadline(body.timeout_ms, "setting the viewport"):
        page = await request.app[browser_key].page(body.target)
        await page.session.execute(
            emulation.set_device_metrics_override(
                width=body.width,
                height=body.height,
                device_scale_factor=body.device_scale_factor,
                mobile=body.mobile,
            )
        )
    return json_reply(attrs.evolve(body, target=page.target_id))


@routes.post("/v1/navigation/user-agent")
async def user_agent(request: web.Request) -> web.Response:
    """Override the user agent (and Accept-Language, platform) of a tab."""
    body = await read_body(request, UserAgentRequest)
    async with deadline(body.timeout_ms, "setting the user agent"):
        page = await request.app[browser_key].page(body.target)
        override = UserAgentOverride(body.user_agent, body.accept_language, body.platform)
        await apply_user_agent(page.session, override)
    return json_reply(attrs.evolve(body, target=page.target_id))
