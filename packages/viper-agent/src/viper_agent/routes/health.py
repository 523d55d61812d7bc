"""GET /v1/health: agent and browser liveness, uptime and versions."""

from __future__ import annotations

import time

from aiohttp import web

from viper_agent import __version__
from viper_agent.keys import browser_key, started_key, supervisor_key
from viper_agent.web import json_reply
from viper_protocol.models.browser import AgentHealth, BrowserStatus

routes = web.RouteTableDef()


@routes.get("/v1/health")
async def get_health(request: web.Request) -> web.Response:
    """Always 200 while the agent runs; `status` says whether the browser is usable."""
    supervisor = request.app[supervisor_key]
    browser = request.app[browser_key]
    version = browser.version.product if browser.version is not None else None
    running = supervisor.status is BrowserStatus.RUNNING and browser.connection is not None
    return json_reply(
        AgentHealth(
            status="ok" if running else "degraded",
            uptime_seconds=round(time.monotonic() - request.app[started_key], 3),
            agent_version=__version__,
            browser=supervisor.health(version),
        )
    )
