"""The DevTools proxy: discovery JSON with URLs rewritten to the server, and the WebSocket relay.

`GET /api/v1/vms/{name}/cdp/json/version` (also with a trailing slash, which Playwright asks
for), `/json/list` and `/json` fetch the agent's discovery answers and rewrite every DevTools
URL in them to `ws(s)://<request host>/api/v1/vms/{name}/cdp/devtools/...`, so that
`connect_over_cdp("http://HOST:7777/api/v1/vms/NAME/cdp")` works. The WebSocket route relays
frames between the client and the agent's `/devtools/...` unchanged: text stays text, binary
stays binary, no size cap, close codes carried across, both legs closed when either ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
from aiohttp import WSMsgType, web

from viper_protocol.errors import AgentUnavailable, BadRequest
from viper_server.keys import engine_key, proxy_session_key, proxy_stats_key, streams_key
from viper_server.web.openapi import operation
from viper_server.web.streams import cancel_and_wait
from viper_server.web.upstream import agent_base, agent_call

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

CDP = "/api/v1/vms/{name}/cdp"
DISCOVERY_TIMEOUT = 15.0
TOUCH_INTERVAL = 1.0
# Close codes a peer may not send (RFC 6455 section 7.4.1); they only describe what happened.
_UNSENDABLE = {1004: 1000, 1005: 1000, 1006: 1011, 1015: 1011}


def public_ws_base(request: web.Request, name: str) -> str:
    """`ws(s)://<host the client used>/api/v1/vms/<name>/cdp`."""
    scheme = "wss" if request.secure else "ws"
    return f"{scheme}://{request.host}/api/v1/vms/{name}/cdp"


def rewrite_ws_url(value: str, ws_base: str, token: str | None) -> str:
    _, sep, tail = value.partition("/devtools/")
    if not sep:
        return value
    path = tail.split("?", 1)[0]
    url = f"{ws_base}/devtools/{path}"
    return f"{url}?{urlencode({'token': token})}" if token else url


def _rewrite_frontend_url(value: str, ws_base: str) -> str:
    # `/devtools/inspector.html?ws=127.0.0.1:9222/devtools/page/ID` (or `wss=`); the parameter
    # holds host and path without the scheme, which the parameter name implies.
    parts = urlsplit(value)
    query = parse_qsl(parts.query, keep_blank_values=True)
    scheme, _, rest = ws_base.partition("://")
    changed = []
    for key, item in query:
        if key in ("ws", "wss") and "/devtools/" in item:
            _, _, tail = item.partition("/devtools/")
            changed.append((scheme, f"{rest}/devtools/{tail}"))
        else:
            changed.append((key, item))
    return urlunsplit(parts._replace(query=urlencode(changed, safe="/:")))


def rewrite_discovery(payload: Any, ws_base: str, token: str | None = None) -> Any:
    """Point every DevTools URL in a `/json/version` or `/json/list` answer at the server.

    Args:
        payload: the decoded JSON answer of the agent (or Chromium).
        ws_base: `ws(s)://host/api/v1/vms/<name>/cdp`, see `public_ws_base`.
        token: the API key the client presented as `?token=`, carried into WebSocket URLs so
            that clients that cannot set headers keep working.
    """
    if isinstance(payload, list):
        return [rewrite_discovery(item, ws_base, token) for item in payload]
    if not isinstance(payload, dict):
        return payload
    out: dict[str, Any] = {}
    for key, value in payload.items():
        if isinstance(value, str) and key == "webSocketDebuggerUrl":
            out[key] = rewrite_ws_url(value, ws_base, token)
        elif isinstance(value, str) and key.startswith("devtoolsFrontendUrl"):
            out[key] = _rewrite_frontend_url(value, ws_base)
        else:
            out[key] = rewrite_discovery(value, ws_base, token)
    return out


async def _discovery(request: web.Request, agent_path: str) -> web.Response:
    base = await agent_base(request)
    async with agent_call(
        request, "GET", f"{base}{agent_path}", timeout=DISCOVERY_TIMEOUT
    ) as response:
        body = await response.read()
        if response.status != 200:
            return web.Response(
                body=body, status=response.status, content_type=response.content_type
            )
    try:
        payload = json.loads(body)
    except ValueError:
        raise AgentUnavailable(
            "the agent answered DevTools discovery with something that is not JSON"
        ) from None
    token = request.query.get("token")
    ws_base = public_ws_base(request, request.match_info["name"])
    return web.json_response(rewrite_discovery(payload, ws_base, token))


_VERSION_DOC = {
    "summary": "DevTools /json/version, URLs rewritten to the server",
    "tag": "devtools",
    "errors": (404, 409, 502, 504),
}


@routes.get(f"{CDP}/json/version")
@operation(**_VERSION_DOC)
async def json_version(request: web.Request) -> web.Response:
    """Browser version and the browser-level WebSocket URL (pointing at this server)."""
    return await _discovery(request, "/json/version")


@routes.get(f"{CDP}/json/version/")
@operation(**_VERSION_DOC)
async def json_version_slash(request: web.Request) -> web.Response:
    """The same with a trailing slash, as Playwright's `connect_over_cdp` asks."""
    return await _discovery(request, "/json/version")


_LIST_DOC = {
    "summary": "DevTools /json/list: page targets, URLs rewritten to the server",
    "tag": "devtools",
    "errors": (404, 409, 502, 504),
}


@routes.get(f"{CDP}/json/list")
@operation(**_LIST_DOC)
async def json_list(request: web.Request) -> web.Response:
    """The page targets with their WebSocket URLs pointing at this server."""
    return await _discovery(request, "/json/list")


@routes.get(f"{CDP}/json/list/")
@operation(**_LIST_DOC)
async def json_list_slash(request: web.Request) -> web.Response:
    """`/json/list` with a trailing slash."""
    return await _discovery(request, "/json/list")


@routes.get(f"{CDP}/json")
@operation(**_LIST_DOC)
async def json_alias(request: web.Request) -> web.Response:
    """`/json`, Chromium's alias of `/json/list`."""
    return await _discovery(request, "/json/list")


@routes.get(f"{CDP}/json/protocol")
@operation(
    summary="The browser's DevTools protocol description (JSON), unchanged",
    tag="devtools",
    errors=(404, 409, 502, 504),
)
async def json_protocol(request: web.Request) -> web.Response:
    """Chromium's `/json/protocol`, relayed as is (it holds no URLs)."""
    base = await agent_base(request)
    async with agent_call(
        request, "GET", f"{base}/json/protocol", timeout=DISCOVERY_TIMEOUT
    ) as response:
        body = await response.read()
        return web.Response(body=body, status=response.status, content_type=response.content_type)


def _sendable(code: int | None) -> int:
    if code is None:
        return 1000
    return _UNSENDABLE.get(code, code)


async def _pump(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    on_frame: Any,
) -> None:
    async for msg in source:
        if msg.type is WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        elif msg.type is WSMsgType.ERROR:
            logger.debug("DevTools relay: %r", source.exception())
            break
        on_frame()


@routes.get(CDP + "/devtools/{kind:browser|page}/{target}")
@operation(
    summary="DevTools WebSocket, relayed frame for frame to the VM's browser",
    tag="devtools",
    websocket=True,
    errors=(403, 404, 409, 502),
)
async def devtools_ws(request: web.Request) -> web.StreamResponse:
    """Relay a DevTools WebSocket between the client and the VM's agent, unchanged."""
    name = request.match_info["name"]
    kind, target = request.match_info["kind"], request.match_info["target"]
    if not target or "/" in target:
        raise BadRequest("not a DevTools target id")
    base = await agent_base(request)
    engine = request.app[engine_key]
    stats = request.app[proxy_stats_key]
    url = f"{base.replace('http', 'ws', 1)}/devtools/{kind}/{target}"
    try:
        upstream = await request.app[proxy_session_key].ws_connect(
            url,
            max_msg_size=0,
            autoclose=False,
            compress=0,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        status = getattr(exc, "status", None)
        raise AgentUnavailable(
            f"cannot open the DevTools WebSocket of VM {name!r}: {str(exc) or type(exc).__name__}",
            {"vm": name, "upstream_status": status},
        ) from None
    client = web.WebSocketResponse(max_msg_size=0, autoclose=False, compress=False)
    last_touch = 0.0

    def on_frame() -> None:
        nonlocal last_touch
        now = time.monotonic()
        if now - last_touch >= TOUCH_INTERVAL:
            last_touch = now
            engine.touch(name)

    shutting_down = False

    async def close_client() -> None:
        nonlocal shutting_down
        shutting_down = True
        await client.close(code=1001, message=b"server shutting down")

    stats.active += 1
    stats.total += 1
    tasks: list[asyncio.Task[None]] = []
    try:
        await client.prepare(request)
        async with request.app[streams_key].track(close_client):
            tasks = [
                asyncio.create_task(_pump(client, upstream, on_frame), name=f"cdp-up:{name}"),
                asyncio.create_task(_pump(upstream, client, on_frame), name=f"cdp-down:{name}"),
            ]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            # Whichever side ended first decides the close code both sides get.
            first = upstream if tasks[1] in done else client
            code = 1001 if shutting_down else _sendable(first.close_code)
            await cancel_and_wait(*tasks)
            if not upstream.closed:
                await upstream.close(code=code)
            if not client.closed:
                await client.close(code=code)
    finally:
        # Also when the handler is cancelled (the client's connection dropped): stop the
        # pumps and close the browser side, so nothing of this connection outlives it.
        stats.active -= 1
        await cancel_and_wait(*tasks)
        if not upstream.closed:
            await upstream.close(code=1001 if shutting_down else _sendable(client.close_code))
        if not client.closed:
            await client.close(code=1011)
    return client
