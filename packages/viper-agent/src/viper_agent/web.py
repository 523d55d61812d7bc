"""HTTP plumbing shared by every route: the error middleware, request parsing, JSON replies.

Handlers raise `ViperError`s; `error_middleware` renders them (and anything else) as the
protocol's `{"error": {"code", "message", "details"}}`, exactly as the server does, so the
server's proxy can pass agent errors through unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler
from cattrs import BaseValidationError

from viper_agent.cdp.connection import CDPConnectionClosed, CDPError
from viper_protocol.converter import (
    converter,
    format_validation_error,
    strict_converter,
    structure_query,
)
from viper_protocol.errors import (
    ActionTimeout,
    BadRequest,
    BrowserUnavailable,
    ErrorEnvelope,
    Internal,
    NotFound,
    UnsupportedMediaType,
    ValidationFailed,
    ViperError,
)
from viper_protocol.models.common import JSONValue

logger = logging.getLogger(__name__)

T = TypeVar("T")


class MethodNotAllowed(ViperError):
    """The route exists but not for this HTTP method."""

    code = "method_not_allowed"
    http_status = 405


def error_response(error: ViperError) -> web.Response:
    """The JSON response for `error`."""
    body = converter.unstructure(ErrorEnvelope(error=error.to_body()))
    return web.json_response(body, status=error.http_status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every failure as the protocol's error body with a fitting status."""
    try:
        return await handler(request)
    except ViperError as exc:
        return error_response(exc)
    except web.HTTPNotFound:
        return error_response(NotFound(f"no route for {request.method} {request.path}"))
    except web.HTTPMethodNotAllowed as exc:
        resp = error_response(
            MethodNotAllowed(
                f"{request.method} is not allowed on {request.path}",
                {"allowed": list[JSONValue](sorted(exc.allowed_methods))},
            )
        )
        resp.headers["Allow"] = ",".join(sorted(exc.allowed_methods))
        return resp
    except web.HTTPException:
        raise
    except CDPConnectionClosed as exc:
        return error_response(BrowserUnavailable(f"lost the connection to Chromium: {exc}"))
    except CDPError as exc:
        return error_response(
            Internal(f"Chromium refused {exc.method}: {exc.message}", {"cdp_code": exc.code})
        )
    except TimeoutError:
        # A CDP call outlived its own limit inside a longer action deadline.
        return error_response(ActionTimeout("Chromium did not answer in time"))
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(Internal("internal error"))


def _validation_failed(exc: BaseException, what: str) -> ValidationFailed:
    return ValidationFailed(
        f"the {what} is invalid", {"errors": list[JSONValue](format_validation_error(exc))}
    )


async def read_body(request: web.Request, cls: type[T]) -> T:
    """Structure a JSON request body into `cls` with the strict converter.

    An empty body counts as `{}`, so actions whose fields all have defaults need none.

    Raises:
        UnsupportedMediaType: a body that is not `application/json`.
        BadRequest: the body is not valid JSON.
        ValidationFailed: the JSON does not fit `cls`.
    """
    raw = await request.read()
    if not raw.strip():
        data: object = {}
    else:
        if request.content_type != "application/json":
            raise UnsupportedMediaType(
                f"expected Content-Type application/json, got {request.content_type}",
                {"content_type": request.content_type},
            )
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}") from None
    try:
        return strict_converter.structure(data, cls)
    except (BaseValidationError, ValueError, TypeError) as exc:
        raise _validation_failed(exc, "request body") from None


def read_query(request: web.Request, cls: type[T]) -> T:
    """Structure the query string into `cls` with the strict converter.

    Raises:
        ValidationFailed: a parameter is unknown, of the wrong type, or breaks a rule.
    """
    try:
        return structure_query(strict_converter, dict(request.query), cls)
    except (BaseValidationError, ValueError, TypeError) as exc:
        raise _validation_failed(exc, "query") from None


def json_reply(obj: object, status: int = 200) -> web.Response:
    """A JSON response of a protocol model, written with the tolerant converter."""
    return web.json_response(converter.unstructure(obj), status=status)


@contextlib.asynccontextmanager
async def deadline(timeout_ms: int, what: str) -> AsyncIterator[None]:
    """Bound the body by `timeout_ms`, raising `ActionTimeout` (504) when it runs out."""
    try:
        async with asyncio.timeout(timeout_ms / 1000):
            yield
    except TimeoutError:
        raise ActionTimeout(
            f"{what} did not finish within {timeout_ms} ms", {"timeout_ms": timeout_ms}
        ) from None
