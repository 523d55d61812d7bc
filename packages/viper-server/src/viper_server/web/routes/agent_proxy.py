"""Agent passthrough: `/api/v1/vms/{name}/...` browser actions relayed to the VM's agent.

Each route forwards method, query, body and the relevant headers to the agent's `/v1/...`
route and answers with the agent's status, body and content type unchanged, so the agent's
own validation and error JSON reach the caller as the agent wrote them. The server adds only
its own failures: unknown VM (404), VM not running (409), agent unreachable (502) or too slow
(504). Every call records activity on the VM for its idle timeout. `/logs` streams the agent's
SSE log stream through as it arrives.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import attrs
from aiohttp import hdrs, web

from viper_protocol.models import browser as b
from viper_server.keys import engine_key, streams_key
from viper_server.web.openapi import SSE, operation
from viper_server.web.routes.cdp import public_ws_base, rewrite_ws_url
from viper_server.web.streams import race_stop
from viper_server.web.upstream import agent_base, agent_call, deadline_for

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

VM = "/api/v1/vms/{name}"
_REQUEST_HEADERS = (hdrs.ACCEPT, hdrs.CONTENT_TYPE, hdrs.ACCEPT_LANGUAGE, "Last-Event-ID")
_RESPONSE_HEADERS = (hdrs.CACHE_CONTROL, hdrs.CONTENT_DISPOSITION)
_BODY_METHODS = frozenset({hdrs.METH_POST, hdrs.METH_PUT, hdrs.METH_PATCH})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Transform = Callable[[web.Request, Any], Any]


@attrs.frozen(kw_only=True)
class Passthrough:
    """One proxied route: server path suffix, agent path and what the document says of it."""

    method: str
    path: str
    agent_path: str
    summary: str
    body: type | None = None
    query: type | None = None
    response: type | None = None
    content: tuple[str, ...] = ("application/json",)
    transform: Transform | None = None


def _params(request: web.Request) -> dict[str, str]:
    """The query to forward: everything but `token` (the server's API key, not the agent's)."""
    return {k: v for k, v in request.query.items() if k != "token"}


def _timeout_of(request: web.Request, body: bytes | None) -> float:
    value: object = None
    if body:
        try:
            decoded = json.loads(body)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            value = decoded.get("timeout_ms")
    elif "timeout_ms" in request.query:
        try:
            value = int(request.query["timeout_ms"])
        except ValueError:
            value = None
    return deadline_for(value)


def _make_handler(spec: Passthrough) -> Handler:
    errors = (404, 409, 422, 502, 504) if spec.body or spec.query else (404, 409, 502, 504)

    @operation(
        summary=spec.summary,
        tag="browser",
        body=spec.body,
        query=spec.query,
        response=spec.response,
        content=spec.content,
        errors=(400, 415, *errors) if spec.body else errors,
        description=f"Proxied to the agent's `{spec.method} {spec.agent_path}`.",
    )
    async def handler(request: web.Request) -> web.StreamResponse:
        base = await agent_base(request)
        body = await request.read() if request.method in _BODY_METHODS else None
        headers = {h: request.headers[h] for h in _REQUEST_HEADERS if h in request.headers}
        async with agent_call(
            request,
            request.method,
            base + spec.agent_path.format_map(request.match_info),
            data=body or None,
            params=_params(request),
            headers=headers,
            timeout=_timeout_of(request, body),
        ) as upstream:
            data = await upstream.read()
            if spec.transform is not None and upstream.status == 200:
                payload = spec.transform(request, json.loads(data))
                return web.json_response(payload)
            response = web.Response(body=data, status=upstream.status)
            if hdrs.CONTENT_TYPE in upstream.headers:
                response.headers[hdrs.CONTENT_TYPE] = upstream.headers[hdrs.CONTENT_TYPE]
            for name in _RESPONSE_HEADERS:
                if name in upstream.headers:
                    response.headers[name] = upstream.headers[name]
            return response

    handler.__name__ = handler.__qualname__ = f"proxy_{spec.method.lower()}_{spec.agent_path}"
    return handler


def _devtools_urls(request: web.Request, payload: Any) -> Any:
    """Point the agent's DevTools WebSocket URL at this server's proxy."""
    if isinstance(payload, dict) and isinstance(payload.get("websocket_url"), str):
        ws_base = public_ws_base(request, request.match_info["name"])
        payload["websocket_url"] = rewrite_ws_url(payload["websocket_url"], ws_base, None)
    return payload


_NAV = "navigation"
PASSTHROUGHS = (
    Passthrough(method="POST", path=_NAV, agent_path="/v1/navigation",
                summary="Navigate to a URL", body=b.NavigateRequest,
                response=b.NavigationResult),
    Passthrough(method="GET", path=_NAV, agent_path="/v1/navigation",
                summary="Current URL, title and history position",
                response=b.NavigationState),
    *(
        Passthrough(method="POST", path=f"{_NAV}/{step}", agent_path=f"/v1/navigation/{step}",
                    summary=summary, body=b.HistoryRequest, response=b.NavigationResult)
        for step, summary in (
            ("back", "Go back in history"),
            ("forward", "Go forward in history"),
            ("reload", "Reload the page"),
            ("wait", "Wait for the next navigation to finish"),
        )
    ),
    Passthrough(method="POST", path=f"{_NAV}/viewport", agent_path="/v1/navigation/viewport",
                summary="Emulate a viewport (size, scale, mobile)", body=b.ViewportRequest),
    Passthrough(method="POST", path=f"{_NAV}/user-agent",
                agent_path="/v1/navigation/user-agent",
                summary="Override user agent, language and platform",
                body=b.UserAgentRequest),
    Passthrough(method="GET", path="dom", agent_path="/v1/dom",
                summary="Read the first (or every) element matching a CSS selector",
                query=b.DomQuery, response=b.DomResult),
    *(
        Passthrough(method="POST", path=f"dom/{action}", agent_path=f"/v1/dom/{action}",
                    summary=summary, body=model, response=b.DomActionResult)
        for action, model, summary in (
            ("click", b.ClickRequest, "Click an element"),
            ("type", b.TypeRequest, "Type text into an element"),
            ("wait", b.WaitRequest, "Wait for an element state"),
        )
    ),
    Passthrough(method="POST", path="script/evaluate", agent_path="/v1/script/evaluate",
                summary="Evaluate JavaScript and return its value",
                body=b.EvaluateRequest, response=b.EvaluateResult),
    Passthrough(method="GET", path="screenshot", agent_path="/v1/screenshot",
                summary="Screenshot of the page, in the format asked",
                query=b.ScreenshotQuery, content=("image/png", "image/jpeg")),
    Passthrough(method="GET", path="profile", agent_path="/v1/profile",
                summary="Export cookies, storage and user agent", response=b.Profile),
    Passthrough(method="PUT", path="profile", agent_path="/v1/profile",
                summary="Import cookies, storage and user agent", body=b.Profile,
                response=b.ProfileImportResult),
    Passthrough(method="GET", path="targets", agent_path="/v1/targets",
                summary="List the page targets (tabs)", response=b.TargetList),
    Passthrough(method="POST", path="targets", agent_path="/v1/targets",
                summary="Open a new tab", body=b.NewTargetRequest, response=b.TargetInfo),
    Passthrough(method="DELETE", path="targets/{target_id}",
                agent_path="/v1/targets/{target_id}", summary="Close a tab"),
    Passthrough(method="GET", path="health", agent_path="/v1/health",
                summary="Agent and browser health", response=b.AgentHealth),
    Passthrough(method="GET", path="devtools", agent_path="/v1/devtools",
                summary="DevTools metadata, WebSocket URL pointing at this server",
                response=b.DevToolsMetadata, transform=_devtools_urls),
)  # fmt: skip

for _spec in PASSTHROUGHS:
    routes.route(_spec.method, f"{VM}/{_spec.path}")(_make_handler(_spec))


@routes.get(f"{VM}/logs")
@operation(
    summary="The browser's log stream (SSE), relayed from the agent",
    tag="browser",
    content=(SSE,),
    errors=(404, 409, 502),
    description="Console messages, page errors, network requests and browser/agent lines; "
    "recent history first. Proxied to the agent's `GET /v1/logs/stream`.",
)
async def logs(request: web.Request) -> web.StreamResponse:
    """Stream the agent's SSE log stream through to the caller, chunk by chunk."""
    base = await agent_base(request)
    name = request.match_info["name"]
    engine = request.app[engine_key]
    headers = {h: request.headers[h] for h in _REQUEST_HEADERS if h in request.headers}
    async with agent_call(
        request, "GET", f"{base}/v1/logs/stream", params=_params(request), headers=headers,
        timeout=None,
    ) as upstream:  # fmt: skip
        if upstream.status != 200:
            body = await upstream.read()
            return web.Response(
                body=body, status=upstream.status, content_type=upstream.content_type
            )
        response = web.StreamResponse(
            headers={hdrs.CONTENT_TYPE: "text/event-stream", hdrs.CACHE_CONTROL: "no-cache"}
        )
        await response.prepare(request)
        async with request.app[streams_key].track() as stop:
            while not stop.is_set():
                try:
                    chunk = await race_stop(upstream.content.readany(), stop)
                except aiohttp.ClientError as exc:
                    logger.info("log stream of VM %r ended: %r", name, exc)
                    break
                if not chunk:
                    break
                try:
                    await response.write(chunk)
                except ConnectionResetError:
                    break
                engine.touch(name)
        return response
