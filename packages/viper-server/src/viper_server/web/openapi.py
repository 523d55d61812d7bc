"""The OpenAPI 3.1 document, built from the app's own router.

Each handler carries an `Operation` (set with the `@operation(...)` decorator): its summary,
the attrs models of its body, query and response, and how it answers (JSON, an image, SSE, a
WebSocket upgrade). `build_openapi(app)` walks `app.router.routes()`, so every registered route
is in the document and nothing that is not registered is; component schemas come from the
models through `SchemaRegistry`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, get_args, get_type_hints

import attrs
from aiohttp import hdrs, web

from viper_protocol.errors import ErrorEnvelope
from viper_protocol.models import browser
from viper_protocol.models.events import Event
from viper_protocol.models.vms import NAME_PATTERN, CreateVMRequest
from viper_server import __version__
from viper_server.web.middleware import PUBLIC_PATHS
from viper_server.web.schema import Schema, SchemaRegistry

F = TypeVar("F", bound=Callable[..., Any])

JSON = "application/json"
SSE = "text/event-stream"
_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")

REQUEST_MODELS = frozenset(
    {
        CreateVMRequest,
        browser.NavigateRequest,
        browser.HistoryRequest,
        browser.ViewportRequest,
        browser.UserAgentRequest,
        browser.ClickRequest,
        browser.TypeRequest,
        browser.WaitRequest,
        browser.EvaluateRequest,
        browser.NewTargetRequest,
        browser.Profile,
        browser.Cookie,
        browser.OriginStorage,
    }
)
"""Models read with the strict converter: their schemas forbid unknown properties."""


@attrs.frozen(kw_only=True)
class Operation:
    """What the OpenAPI document says about one handler.

    Attributes:
        summary: one line for the document.
        tag: the group (vms, browser, devtools, events, system).
        body: the attrs model of the JSON body, if any.
        query: the attrs model whose fields are the query parameters, if any.
        params: extra query parameters, name -> (schema, description).
        response: the attrs model of a JSON answer (None: an object not described further).
        status: the success status.
        content: the media type(s) of the success answer.
        websocket: the route upgrades to a WebSocket (answers 101).
        errors: the error statuses worth listing (every route may also answer 401 and 500).
    """

    summary: str
    tag: str
    body: type | None = None
    query: type | None = None
    params: Mapping[str, tuple[Schema, str]] = attrs.field(factory=dict)
    response: type | None = None
    status: int = 200
    content: tuple[str, ...] = (JSON,)
    websocket: bool = False
    errors: tuple[int, ...] = ()
    description: str | None = None


def operation(**kwargs: Any) -> Callable[[F], F]:
    """Decorator: attach an `Operation` (same keyword arguments) to a handler."""
    op = Operation(**kwargs)

    def mark(handler: F) -> F:
        handler.__viper_operation__ = op  # type: ignore[attr-defined]
        return handler

    return mark


def operation_of(handler: object) -> Operation | None:
    """The `Operation` a handler was marked with, if any."""
    op = getattr(handler, "__viper_operation__", None)
    return op if isinstance(op, Operation) else None


_ERROR_TEXT = {
    400: "Malformed request (not JSON, bad query parameter)",
    401: "Missing or wrong API key",
    403: "Forbidden (foreign WebSocket Origin)",
    404: "Unknown VM, target or route",
    409: "Conflict (name taken, or the VM is not in the required state)",
    415: "The body is not application/json",
    422: "The body or query does not match the model",
    500: "Internal error or launch failure",
    502: "The VM's agent is unreachable",
    503: "No capacity, or the browser is unavailable",
    504: "The agent or the action timed out",
}


def _operation_id(method: str, path: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_")
    return f"{method.lower()}_{slug}{'_slash' if path.endswith('/') else ''}"


def _path_params(path: str) -> list[Schema]:
    params: list[Schema] = []
    for name in _PARAM.findall(path):
        schema: Schema = {"type": "string"}
        if name == "name":
            schema["pattern"] = f"^{NAME_PATTERN}$"
        elif name == "kind":
            schema["enum"] = ["browser", "page"]
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    return params


def _query_params(op: Operation, registry: SchemaRegistry) -> list[Schema]:
    params: list[Schema] = []
    if op.query is not None:
        hints = get_type_hints(op.query)
        for field in attrs.fields(op.query):
            schema = registry.type_schema(hints[field.name])
            entry: Schema = {"name": field.name, "in": "query", "schema": schema}
            if field.default is attrs.NOTHING:
                entry["required"] = True
            params.append(entry)
    for name, (schema, description) in op.params.items():
        params.append({"name": name, "in": "query", "schema": schema, "description": description})
    return params


def _responses(op: Operation, registry: SchemaRegistry) -> dict[str, Schema]:
    error = {"content": {JSON: {"schema": registry.ref(ErrorEnvelope)}}}
    responses: dict[str, Schema] = {}
    if op.websocket:
        responses["101"] = {"description": "Switching Protocols: the WebSocket is open"}
    else:
        content: dict[str, Schema] = {}
        for media in op.content:
            if media == JSON:
                schema = registry.ref(op.response) if op.response else {"type": "object"}
            elif media.startswith("image/"):
                schema = {"type": "string", "contentEncoding": "binary"}
            else:
                schema = {"type": "string"}
            content[media] = {"schema": schema}
        responses[str(op.status)] = {"description": op.summary, "content": content}
    for status in sorted({*op.errors, 500}):
        responses[str(status)] = {"description": _ERROR_TEXT.get(status, "Error"), **error}
    responses["default"] = {"description": "Any other error, in the same shape", **error}
    return responses


def _undocumented(method: str, path: str) -> Operation:
    return Operation(summary=f"{method} {path}", tag="other")


def build_openapi(
    app: web.Application, *, strict_models: frozenset[type] = REQUEST_MODELS
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route registered in `app` (and its sub-apps).

    Args:
        app: the application whose router is described.
        strict_models: request models, whose schemas forbid properties they do not name.
    """
    registry = SchemaRegistry(strict=strict_models)
    # What the event streams carry (SSE `data:` and WebSocket frames), for clients to use.
    registry.one_of("Event", get_args(Event))
    paths: dict[str, dict[str, Schema]] = {}
    for route in app.router.routes():
        if route.method in (hdrs.METH_HEAD, hdrs.METH_ANY) or route.resource is None:
            continue
        path = route.resource.canonical
        op = operation_of(route.handler) or _undocumented(route.method, path)
        entry: Schema = {
            "operationId": _operation_id(route.method, path),
            "summary": op.summary,
            "tags": [op.tag],
            "responses": _responses(op, registry),
        }
        if op.description:
            entry["description"] = op.description
        params = _path_params(path) + _query_params(op, registry)
        if params:
            entry["parameters"] = params
        if op.body is not None:
            # A body whose fields all have defaults may be left out (`POST .../reload`).
            entry["requestBody"] = {
                "required": any(f.default is attrs.NOTHING for f in attrs.fields(op.body)),
                "content": {JSON: {"schema": registry.ref(op.body)}},
            }
        if path in PUBLIC_PATHS:
            entry["security"] = []
        paths.setdefault(path, {})[route.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Viper server API",
            "version": __version__,
            "description": "One headless Chromium per microVM: VMs, browser actions, events, "
            'and a DevTools proxy. Errors are {"error": {"code", "message", "details"}}.',
        },
        "servers": [{"url": "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(registry.schemas.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
