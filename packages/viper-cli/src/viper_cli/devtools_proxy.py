"""A local DevTools endpoint that relays to a VM's browser through the server.

Some tools only speak to `localhost:9222`. This serves `/json/version`, `/json/list` and the
`/devtools/...` WebSockets on a local port, forwarding each to the server's
`/api/v1/vms/NAME/cdp/...` and rewriting URLs to point back here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from aiohttp import web

logger = logging.getLogger(__name__)

MAX_MESSAGE = 512 * 1024 * 1024


class DevToolsProxy:
    """`async with DevToolsProxy(api, key, vm, host, port) as p:` serves until the block ends."""

    def __init__(self, api_base: str, api_key: str | None, vm: str, host: str, port: int) -> None:
        self.upstream = f"{api_base.rstrip('/')}/api/v1/vms/{vm}/cdp"
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> DevToolsProxy:
        self._session = aiohttp.ClientSession(headers=self.headers)
        app = web.Application()
        app.router.add_get("/json/version", self._json)
        app.router.add_get("/json/version/", self._json)
        app.router.add_get("/json/list", self._json)
        app.router.add_get("/json/list/", self._json)
        app.router.add_get("/json", self._json)
        app.router.add_get("/devtools/{kind}/{id}", self._ws)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _rewrite(self, value: Any, request: web.Request) -> Any:
        local = f"{request.host}"
        if isinstance(value, dict):
            return {k: self._rewrite(v, request) for k, v in value.items()}
        if isinstance(value, list):
            return [self._rewrite(v, request) for v in value]
        if isinstance(value, str) and "/cdp/devtools/" in value:
            _, _, tail = value.partition("/cdp/devtools/")
            return f"ws://{local}/devtools/{tail}"
        return value

    async def _json(self, request: web.Request) -> web.Response:
        assert self._session is not None
        path = request.path if request.path != "/json" else "/json/list"
        async with self._session.get(self.upstream + path) as resp:
            body = await resp.json(content_type=None)
            return web.json_response(self._rewrite(body, request), status=resp.status)

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        assert self._session is not None
        url = self.upstream.replace("http", "ws", 1) + request.path
        down = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, autoping=True)
        await down.prepare(request)
        async with self._session.ws_connect(url, max_msg_size=MAX_MESSAGE) as up:

            async def pump(src: Any, dst: Any) -> None:
                async for msg in src:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        await dst.send_str(msg.data)
                    elif msg.type == aiohttp.WSMsgType.BINARY:
                        await dst.send_bytes(msg.data)
                    else:
                        break

            tasks = [asyncio.ensure_future(pump(down, up)), asyncio.ensure_future(pump(up, down))]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await down.close()
        return down
