"""GET/PUT /v1/profile: export and import cookies, web storage and user agent."""

from __future__ import annotations

from aiohttp import web

from viper_agent.keys import browser_key
from viper_agent.ops.profile import export_profile, import_profile
from viper_agent.web import deadline, json_reply, read_body
from viper_protocol.models.browser import Profile

routes = web.RouteTableDef()

PROFILE_TIMEOUT_MS = 60_000


@routes.get("/v1/profile")
async def get_profile(request: web.Request) -> web.Response:
    """Everything that carries a logged-in session to another browser."""
    async with deadline(PROFILE_TIMEOUT_MS, "exporting the profile"):
        return json_reply(await export_profile(request.app[browser_key]))


@routes.put("/v1/profile")
async def put_profile(request: web.Request) -> web.Response:
    """Import a profile exported from this or another agent."""
    body = await read_body(request, Profile)
    async with deadline(PROFILE_TIMEOUT_MS, "importing the profile"):
        return json_reply(await import_profile(request.app[browser_key], body))
