"""The agent's aiohttp application factory: wiring only, no I/O until the app starts.

Cleanup contexts, in order: the log hub (and the handler copying agent log records into it),
the Chromium supervisor, then the CDP connection. aiohttp unwinds them in reverse, so on
shutdown the connection closes first and Chromium is stopped and its profile removed last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator

from aiohttp import web

from viper_agent.browser import Browser
from viper_agent.config import AgentConfig
from viper_agent.keys import (
    browser_key,
    config_key,
    hub_key,
    sockets_key,
    started_key,
    streams_key,
    supervisor_key,
)
from viper_agent.logs import HubHandler, LogHub
from viper_agent.routes import (
    devtools,
    dom,
    health,
    logs,
    navigation,
    profile,
    screenshot,
    script,
    targets,
)
from viper_agent.supervisor import ChromiumSupervisor
from viper_agent.web import error_middleware

logger = logging.getLogger(__name__)

MAX_BODY = 64 * 1024 * 1024  # profiles with much storage, long scripts


async def _hub_ctx(app: web.Application) -> AsyncIterator[None]:
    hub = app[hub_key]
    handler = HubHandler(hub)
    root = logging.getLogger("viper_agent")
    root.addHandler(handler)
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        hub.close()


async def _supervisor_ctx(app: web.Application) -> AsyncIterator[None]:
    supervisor = app[supervisor_key]
    await supervisor.start()
    try:
        yield
    finally:
        await supervisor.stop()


async def _browser_ctx(app: web.Application) -> AsyncIterator[None]:
    browser = app[browser_key]
    await browser.start()
    try:
        yield
    finally:
        await browser.stop()


async def _close_streams(app: web.Application) -> None:
    """Close log streams and DevTools sockets so they do not hold up shutdown."""
    app[hub_key].close()
    registry = app[sockets_key]
    sockets = list(registry)
    await asyncio.gather(
        *(ws.close(code=1001, message=b"agent shutting down") for ws in sockets),
        return_exceptions=True,
    )
    with contextlib.suppress(Exception):
        await asyncio.sleep(0)


def create_app(config: AgentConfig) -> web.Application:
    """Build the agent application for `config` (nothing starts until it runs)."""
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_BODY)
    hub = LogHub(config.log_history)
    supervisor = ChromiumSupervisor(config, hub)
    app[config_key] = config
    app[hub_key] = hub
    app[supervisor_key] = supervisor
    app[browser_key] = Browser(supervisor, hub)
    app[started_key] = time.monotonic()
    streams: weakref.WeakSet[web.StreamResponse] = weakref.WeakSet()
    sockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
    app[streams_key] = streams
    app[sockets_key] = sockets
    app.cleanup_ctx.append(_hub_ctx)
    app.cleanup_ctx.append(_supervisor_ctx)
    app.cleanup_ctx.append(_browser_ctx)
    app.on_shutdown.append(_close_streams)
    for module in (health, devtools, navigation, dom, script, screenshot, profile, logs, targets):
        app.add_routes(module.routes)
    return app
