"""Typed application state keys (aiohttp's "No Singletons"): nothing in the app is global."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from viper_server.config import ServerConfig
from viper_server.web.streams import ProxyStats, StreamRegistry

if TYPE_CHECKING:
    # Only for typing: importing the web layer must not import the whole orchestrator.
    from viper_server.orchestrator.engine import Engine

config_key = web.AppKey("config_key", ServerConfig)
engine_key: web.AppKey[Engine] = web.AppKey("engine_key")
proxy_session_key = web.AppKey("proxy_session_key", aiohttp.ClientSession)
"""The ClientSession the agent passthrough and the DevTools proxy use (no total timeout)."""
streams_key = web.AppKey("streams_key", StreamRegistry)
proxy_stats_key = web.AppKey("proxy_stats_key", ProxyStats)
