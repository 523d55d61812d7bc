"""GET /v1/screenshot: the image itself, PNG or JPEG, viewport or full page."""

from __future__ import annotations

from aiohttp import web

from viper_agent.keys import browser_key
from viper_agent.ops.capture import CONTENT_TYPES, screenshot
from viper_agent.web import deadline, read_query
from viper_protocol.models.browser import ScreenshotQuery

routes = web.RouteTableDef()


@routes.get("/v1/screenshot")
async def get_screenshot(request: web.Request) -> web.Response:
    """Capture a tab; the body is the encoded image with its own Content-Type."""
    q = read_query(request, ScreenshotQuery)
    async with deadline(q.timeout_ms, "the screenshot"):
        page = await request.app[browser_key].page(q.target)
        image = await screenshot(page, q)
    return web.Response(body=image, content_type=CONTENT_TYPES[q.format])
