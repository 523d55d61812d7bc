"""DevTools discovery and WebSocket proxy: /v1/devtools, /json/version, /json/list, /devtools/*.

Chromium listens on 127.0.0.1 only; this is how Playwright, Puppeteer and the server reach it.
Discovery answers are fetched from Chromium and every URL in them is rewritten to the agent's
own address (the Host the client used). WebSockets are relayed frame for frame with no size
cap below 512 MiB; the upstream connection is made fresh, so its Host is Chromium's own and no
Origin is sent (Chromium refuses foreign ones). When either side goes away the other is closed
with a proper close code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web

from viper_agent.keys import sockets_key, supervisor_key
from viper_agent.web import json_reply
from viper_protocol.errors import BrowserUnavailable, NotFound
from viper_protocol.models.browser import DevToolsMetadata

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

MAX_MESSAGE = 512 * 1024 * 1024
_WS_IN_URL = re.compile(r"(ws=|wss=|ws://|wss://)[^/&\s\"]+(/devtools/)")
_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


async def _fetch_json(request: web.Request, path: str) -> Any:
    """GET `path` from Chromium's DevTools HTTP endpoint.

    Raises:
        BrowserUnavailable: Chromium is not running or does not answer.
    """
    base = request.app[supervisor_key].endpoint
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
            http.get(base + path) as resp,
        ):
            resp.raise_for_status()
            return await resp.json(content_type=None)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise BrowserUnavailable(f"Chromium's DevTools endpoint did not answer: {exc}") from exc


def _rewrite(value: Any, host: str) -> Any:
    """Point every DevTools URL in a discovery answer at `host`, the agent as its client sees it."""
    if isinstance(value, str):
        return _WS_IN_URL.sub(lambda m: f"{m.group(1)}{host}{m.group(2)}", value)
    if isinstance(value, list):
        return [_rewrite(v, host) for v in value]
    if isinstance(value, dict):
        return {k: _rewrite(v, host) for k, v in value.items()}
    return value


@routes.get("/json/version")
@routes.get("/json/version/")
async def json_version(request: web.Request) -> web.Response:
    """Chromium's /json/version with its WebSocket URL rewritten to this agent."""
    return web.json_response(_rewrite(await _fetch_json(request, "/json/version"), request.host))


@routes.get("/json")
@routes.get("/json/")
@routes.get("/json/list")
@routes.get("/json/list/")
async def json_list(request: web.Request) -> web.Response:
    """Chromium's target list with every URL rewritten to this agent."""
    return web.json_response(_rewrite(await _fetch_json(request, "/json/list"), request.host))


@routes.get("/json/protocol")
@routes.get("/json/protocol/")
async def json_protocol(request: web.Request) -> web.Response:
    """The protocol description of the running Chromium, as it gives it."""
    return web.json_response(await _fetch_json(request, "/json/protocol"))


@routes.get("/v1/devtools")
async def get_devtools(request: web.Request) -> web.Response:
    """What Chromium says about itself, with the agent-relative browser WebSocket path."""
    info = await _fetch_json(request, "/json/version")
    ws_url: str = _rewrite(info.get("webSocketDebuggerUrl", ""), request.host)
    path = "/devtools/" + ws_url.split("/devtools/", 1)[1] if "/devtools/" in ws_url else ""
    return json_reply(
        DevToolsMetadata(
            browser=info.get("Browser", ""),
            protocol_version=info.get("Protocol-Version", ""),
            user_agent=info.get("User-Agent", ""),
            v8_version=info.get("V8-Version", ""),
            webkit_version=info.get("WebKit-Version", ""),
            websocket_path=path,
            websocket_url=ws_url,
        )
    )


@routes.get("/devtools/{kind:browser|page}/{id}")
async def devtools_socket(request: web.Request) -> web.StreamResponse:
    """Relay one DevTools WebSocket to Chromium, frame for frame."""
    kind, target_id = request.match_info["kind"], request.match_info["id"]
    if not _ID.fullmatch(target_id):
        raise NotFound(f"no DevTools target {target_id!r}")
    upstream_url = request.app[supervisor_key].endpoint.replace("http://", "ws://", 1)
    upstream_url += f"/devtools/{kind}/{target_id}"
    http = aiohttp.ClientSession()
    try:
        upstream = await http.ws_connect(
            upstream_url, max_msg_size=MAX_MESSAGE, compress=0, autoping=True
        )
    except aiohttp.WSServerHandshakeError as exc:
        # Chromium is up (its endpoint is known) but refuses the upgrade: no such target.
        await http.close()
        raise NotFound(
            f"Chromium has no {kind} target {target_id!r}", {"upstream_status": exc.status}
        ) from exc
    except (aiohttp.ClientError, OSError) as exc:
        await http.close()
        raise BrowserUnavailable(f"cannot reach Chromium's DevTools socket: {exc}") from exc
    client = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, compress=False, autoping=True)
    try:
        await client.prepare(request)
        request.app[sockets_key].add(client)
        await _relay(client, upstream)
    finally:
        await upstream.close()
        await http.close()
    return client


async def _pump(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    async for msg in source:
        if msg.type is WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        elif msg.type is WSMsgType.ERROR:
            break


async def _relay(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    down = asyncio.create_task(_pump(upstream, client), name="devtools-down")
    up = asyncio.create_task(_pump(client, upstream), name="devtools-up")
    try:
        done, _ = await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (down, up):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    # Whoever ended first, close the other with its code (or "going away").
    if down in done:
        await client.close(code=_sendable(upstream.close_code))
    else:
        await upstream.close(code=_sendable(client.close_code))


def _sendable(code: int | None) -> int:
    # 1005, 1006 and 1015 only describe a close; they may not be sent in a close frame.
    if code is None or code in (1005, 1006, 1015) or not 1000 <= code < 5000:
        return WSCloseCode.GOING_AWAY
    return code
