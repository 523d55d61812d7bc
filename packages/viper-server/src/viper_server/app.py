"""The application factory: wires middlewares, routes and the resource lifecycle, no I/O.

`create_app(config)` only builds the `web.Application`. Resources start in `cleanup_ctx`
order and stop in reverse: the engine (store, event bus, runtimes, reconcile; the engine
owns their order), then the `ClientSession` the agent passthrough and DevTools proxy use.
`on_shutdown` stops every SSE and WebSocket stream first, so that open streams do not hold
shutdown for `shutdown_timeout`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from viper_server.config import ServerConfig
from viper_server.keys import (
    config_key,
    engine_key,
    proxy_session_key,
    proxy_stats_key,
    streams_key,
)
from viper_server.orchestrator.engine import Engine
from viper_server.web.middleware import (
    auth_middleware,
    content_type_middleware,
    error_middleware,
    origin_middleware,
)
from viper_server.web.routes import agent_proxy, cdp, events, system, vms, ws
from viper_server.web.streams import ProxyStats, StreamRegistry

logger = logging.getLogger(__name__)

MAX_BODY = 64 * 1024 * 1024
"""Largest request body (a profile import with much storage; a 1 MiB script)."""


async def _engine_ctx(app: web.Application) -> AsyncIterator[None]:
    engine = Engine(app[config_key])
    await engine.start()
    app[engine_key] = engine
    logger.info(
        "viper-server ready: VMs run with the %s runtime by default (configured: %s)%s",
        engine.default_runtime,
        app[config_key].runtime,
        "" if engine.default_runtime.isolated else "; process VMs are NOT isolated",
    )
    try:
        yield
    finally:
        await _close_engine(engine)


async def _close_engine(engine: Engine) -> None:
    # `web.run_app` cancels its main task before the cleanups run in it, so this code runs in
    # a task whose `cancelling()` is already 1; code below that re-raises a CancelledError
    # "aimed at the caller" would then abort the close halfway (the store left open keeps the
    # process from exiting). A task of its own sees only its own cancellations.
    logger.info("stopping the engine")
    closing = asyncio.create_task(engine.close(), name="engine-close")
    try:
        await asyncio.shield(closing)
    except asyncio.CancelledError:
        await closing
        raise
    logger.info("engine stopped")


async def _proxy_session_ctx(app: web.Application) -> AsyncIterator[None]:
    # No total timeout: proxied DevTools sockets and log streams live for hours; each
    # request sets its own deadline. No connection limit: one socket per DevTools client.
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None),
        connector=aiohttp.TCPConnector(limit=0),
    )
    app[proxy_session_key] = session
    try:
        yield
    finally:
        await session.close()


async def _close_streams(app: web.Application) -> None:
    streams = app[streams_key]
    logger.info("shutting down: closing %d open stream(s)", len(streams))
    await streams.close_all()


def create_app(config: ServerConfig) -> web.Application:
    """Build the server application for `config` (starts nothing until it runs)."""
    app = web.Application(
        middlewares=[
            error_middleware,
            auth_middleware(config.api_key),
            origin_middleware,
            content_type_middleware,
        ],
        client_max_size=MAX_BODY,
    )
    app[config_key] = config
    app[streams_key] = StreamRegistry()
    app[proxy_stats_key] = ProxyStats()
    app.cleanup_ctx.append(_engine_ctx)
    app.cleanup_ctx.append(_proxy_session_ctx)
    app.on_shutdown.append(_close_streams)
    for module in (system, vms, agent_proxy, cdp, events, ws):
        app.router.add_routes(module.routes)
    return app
