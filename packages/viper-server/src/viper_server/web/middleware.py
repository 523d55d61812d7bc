"""Request middlewares: error rendering, API-key auth, JSON Content-Type and WebSocket Origin.

`error_middleware` is the one place where errors become JSON: every failure, whether raised by
the orchestrator (`ViperError`), the converter (cattrs validation errors), aiohttp itself
(`HTTPNotFound`, `HTTPMethodNotAllowed`, a too large body) or a bug, leaves the server as
`{"error": {"code", "message", "details"}}` with a fitting status. The other middlewares only
raise `ViperError`s and let it render them.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from ipaddress import ip_address
from typing import cast
from urllib.parse import urlsplit

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware
from cattrs import BaseValidationError

from viper_protocol.converter import WireTypeError, converter, format_validation_error
from viper_protocol.errors import (
    BadRequest,
    ErrorEnvelope,
    Forbidden,
    Unauthorized,
    UnsupportedMediaType,
    ViperError,
)
from viper_protocol.models.common import InvalidField, JSONObject, JSONValue

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    431: "headers_too_large",
}
_BODY_METHODS = frozenset({hdrs.METH_POST, hdrs.METH_PUT, hdrs.METH_PATCH})
PUBLIC_PATHS = frozenset({"/healthz"})
"""Routes that never need the API key (liveness probes)."""


def error_response(
    status: int, code: str, message: str, details: JSONObject | None = None
) -> web.Response:
    """The JSON error response every failure of the server is rendered as."""
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return web.json_response(body, status=status)


def viper_error_response(err: ViperError) -> web.Response:
    """Render a `ViperError` with its own status."""
    envelope = ErrorEnvelope(error=err.to_body())
    return web.json_response(converter.unstructure(envelope), status=err.http_status)


def _http_exception_response(exc: web.HTTPException, request: web.Request) -> web.Response:
    status = exc.status
    code = _HTTP_CODES.get(status, "internal" if status >= 500 else f"http_{status}")
    details: JSONObject = {}
    if isinstance(exc, web.HTTPMethodNotAllowed):
        message = f"method {request.method} is not allowed on {request.path}"
        allowed = cast("list[JSONValue]", sorted(exc.allowed_methods))
        details = {"allowed": allowed}
    elif status == 404:
        message = f"no route matches {request.method} {request.path}"
    else:
        message = exc.text or exc.reason
        if message.startswith(f"{status}: "):
            message = message[len(f"{status}: ") :]
    response = error_response(status, code, message, details)
    for name in (hdrs.ALLOW, hdrs.WWW_AUTHENTICATE):
        if name in exc.headers:
            response.headers[name] = exc.headers[name]
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure of a handler into the JSON error shape with the right status.

    `ViperError` -> its `http_status`; cattrs validation errors (and a model rule broken outside
    cattrs) -> 422 `validation_failed` with `details.errors` as `<problem> @ <json path>` lines;
    `HTTPException`s (unknown route, wrong method, body too large) -> the same JSON shape with
    their status; anything else is logged with its traceback and answered 500 `internal`.
    """
    try:
        return await handler(request)
    except ViperError as err:
        if err.http_status >= 500:
            logger.warning("%s %s failed: %s: %s", request.method, request.path, err.code, err)
        return viper_error_response(err)
    except (BaseValidationError, WireTypeError) as exc:
        # A wrong top-level type (an array where an object belongs) is not wrapped by cattrs.
        errors: list[JSONValue] = list(format_validation_error(exc))
        return error_response(
            422, "validation_failed", "the request is not valid", {"errors": errors}
        )
    except InvalidField as exc:
        lines: list[JSONValue] = [f"{exc.message} @ $.{exc.field}"]
        return error_response(
            422, "validation_failed", "the request is not valid", {"errors": lines}
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_exception_response(exc, request)
    except Exception:
        logger.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal", "internal server error")


def _is_ws_path(path: str) -> bool:
    return path.startswith("/ws/") or "/cdp/" in path


def _presented_key(request: web.Request) -> str | None:
    header = request.headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if _is_ws_path(request.path):
        return request.query.get("token")
    return None


def auth_middleware(
    api_key: str | None,
) -> Middleware:
    """Require `Authorization: Bearer KEY` on every route but `/healthz` when a key is set.

    The DevTools proxy and WebSocket routes also take `?token=KEY`, because DevTools clients
    and browsers cannot always set headers on a WebSocket. Keys are compared in constant time.
    """
    expected = api_key.encode() if api_key else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is None or request.path in PUBLIC_PATHS:
            return await handler(request)
        presented = _presented_key(request)
        if presented is None:
            raise Unauthorized("an API key is required: send Authorization: Bearer <key>")
        if not hmac.compare_digest(presented.encode(), expected):
            raise Unauthorized("the API key is not valid")
        return await handler(request)

    return middleware


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


@web.middleware
async def content_type_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a POST/PUT/PATCH whose body is anything but JSON (415).

    A body without a Content-Type is refused too (curl's `-d` sends form encoding by default).
    A bodyless POST (`/navigation/reload`) is fine whatever it declares: some clients label an
    empty body `application/octet-stream`.
    """
    if (
        request.method in _BODY_METHODS
        and request.body_exists
        and not _is_json(request.content_type)
    ):
        shown = request.headers.get(hdrs.CONTENT_TYPE, "none")
        raise UnsupportedMediaType(
            f"the body must be application/json, not {shown}", {"content_type": shown}
        )
    return await handler(request)


def _host_only(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def origin_allowed(origin: str | None, host: str | None) -> bool:
    """Whether a WebSocket from `origin` may connect to a server reached as `host`.

    Allowed: no Origin (non-browser clients: Playwright, Puppeteer, scripts), an Origin on the
    same host as the request, and loopback origins (a local DevTools frontend or page).
    """
    if origin is None:
        return True
    if origin == "null":
        return False
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    if _is_loopback(parts.hostname):
        return True
    return host is not None and parts.hostname == _host_only(host)


@web.middleware
async def origin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse WebSocket upgrades from a foreign Origin (403), against cross-site WebSocket use."""
    if request.headers.get(hdrs.UPGRADE, "").lower() == "websocket" and not origin_allowed(
        request.headers.get(hdrs.ORIGIN), request.host
    ):
        raise Forbidden(
            "WebSocket connections from this Origin are not allowed",
            {"origin": request.headers.get(hdrs.ORIGIN, "")},
        )
    return await handler(request)


async def read_json(request: web.Request) -> object:
    """The request body as JSON.

    Raises:
        BadRequest: there is no body, or it is not valid JSON.
    """
    raw = await request.read()
    if not raw.strip():
        raise BadRequest("a JSON body is required")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
