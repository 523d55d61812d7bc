"""Tabs: GET/POST /v1/targets and DELETE /v1/targets/{id}."""

from __future__ import annotations

from aiohttp import web

from viper_agent.keys import browser_key
from viper_agent.web import deadline, json_reply, read_body
from viper_protocol.models.browser import NewTargetRequest, TargetInfo, TargetList

routes = web.RouteTableDef()


@routes.get("/v1/targets")
async def list_targets(request: web.Request) -> web.Response:
    """Every open tab, the default (first) one first."""
    browser = request.app[browser_key]
    browser.conn()
    return json_reply(
        TargetList(
            targets=[
                TargetInfo(id=t.target_id, type=t.type, url=t.url, title=t.title)
                for t in browser.pages()
            ]
        )
    )


@routes.post("/v1/targets")
async def new_target(request: web.Request) -> web.Response:
    """Open a tab at `url`; answers 201 with its id."""
    body = await read_body(request, NewTargetRequest)
    browser = request.app[browser_key]
    async with deadline(body.timeout_ms, "opening a tab"):
        page = await browser.new_page(body.url)
    info = next((t for t in browser.pages() if t.target_id == page.target_id), None)
    return json_reply(
        TargetInfo(
            id=page.target_id,
            type="page",
            url=info.url if info and info.url else body.url,
            title=info.title if info else "",
        ),
        status=201,
    )


@routes.delete("/v1/targets/{id}")
async def close_target(request: web.Request) -> web.Response:
    """Close a tab; 204 when done, 404 for an unknown id."""
    await request.app[browser_key].close_page(request.match_info["id"])
    return web.Response(status=204)
