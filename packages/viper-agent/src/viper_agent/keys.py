"""Typed application keys: everything the agent app holds, with no globals."""

from __future__ import annotations

import weakref

from aiohttp import web

from viper_agent.browser import Browser
from viper_agent.config import AgentConfig
from viper_agent.logs import LogHub
from viper_agent.supervisor import ChromiumSupervisor

config_key = web.AppKey("config", AgentConfig)
hub_key = web.AppKey("hub", LogHub)
supervisor_key = web.AppKey("supervisor", ChromiumSupervisor)
browser_key = web.AppKey("browser", Browser)
started_key = web.AppKey("started", float)
streams_key: web.AppKey[weakref.WeakSet[web.StreamResponse]] = web.AppKey("streams")
sockets_key: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("sockets")
