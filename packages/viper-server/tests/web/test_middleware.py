"""The middlewares on a small app of their own: error shapes, auth, Content-Type, Origin."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from viper_protocol.converter import strict_converter, structure_query
from viper_protocol.errors import AlreadyExists, InvalidState
from viper_protocol.models.vms import CreateVMRequest
from viper_server.web.middleware import (
    auth_middleware,
    content_type_middleware,
    error_middleware,
    origin_allowed,
    origin_middleware,
    read_json,
)
from viper_server.web.routes.vms import ListQuery

from .conftest import ClientFactory

KEY = "s3cret-key"


async def _create(request: web.Request) -> web.Response:
    req = strict_converter.structure(await read_json(request), CreateVMRequest)
    if req.name == "taken":
        raise AlreadyExists("a VM named 'taken' exists", {"name": req.name})
    return web.json_response({"name": req.name}, status=201)


async def _list(request: web.Request) -> web.Response:
    query = structure_query(strict_converter, request.query, ListQuery)
    return web.json_response({"status": query.status})


async def _state(request: web.Request) -> web.Response:
    raise InvalidState("VM 'x' is starting", state="starting", required=["running"])


async def _boom(request: web.Request) -> web.Response:
    raise RuntimeError("bug")


async def _ws(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_str("hello")
    await ws.close()
    return ws


def make_app(api_key: str | None = None) -> web.Application:
    app = web.Application(
        middlewares=[
            error_middleware,
            auth_middleware(api_key),
            origin_middleware,
            content_type_middleware,
        ]
    )
    app.router.add_post("/api/v1/vms", _create)
    app.router.add_get("/api/v1/vms", _list)
    app.router.add_get("/state", _state)
    app.router.add_get("/boom", _boom)
    app.router.add_get("/healthz", _list)
    app.router.add_get("/ws/v1/events", _ws)
    app.router.add_get("/api/v1/vms/{name}/cdp/devtools/page/{id}", _ws)
    return app


def _assert_error(body: Any, code: str) -> dict[str, Any]:
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["details"], dict)
    return error  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"name": "a", "cpu_cores": "2"}, "expected int, got string @ $.cpu_cores"),
        ({"name": "a", "cpu_cores": True}, "expected int, got boolean @ $.cpu_cores"),
        ({"name": "a", "colour": "red"}, "unknown field(s): colour @ $"),
        ({"name": "Bad_Name"}, "@ $.name"),
        ({"name": "a", "memory_mb": 1}, "must be between 256 and 65536 @ $.memory_mb"),
        ({"cpu_cores": 1}, "required field missing @ $.name"),
        (["name"], "expected object, got array @ $"),
    ],
)
async def test_validation_errors_are_422(
    make_client: ClientFactory, body: object, needle: str
) -> None:
    client = await make_client(make_app())
    resp = await client.post("/api/v1/vms", json=body)
    assert resp.status == 422
    error = _assert_error(await resp.json(), "validation_failed")
    assert any(needle in line for line in error["details"]["errors"]), error


async def test_bad_query_is_422(make_client: ClientFactory) -> None:
    client = await make_client(make_app())
    resp = await client.get("/api/v1/vms", params={"status": "sleeping"})
    assert resp.status == 422
    _assert_error(await resp.json(), "validation_failed")
    resp = await client.get("/api/v1/vms", params={"colour": "red"})
    assert resp.status == 422
    resp = await client.get("/api/v1/vms", params={"status": "running"})
    assert resp.status == 200
    assert await resp.json() == {"status": "running"}


async def test_bad_json_and_empty_body_are_400(make_client: ClientFactory) -> None:
    client = await make_client(make_app())
    headers = {"Content-Type": "application/json"}
    for data in (b"{not json", b"", b"\xff\xfe"):
        resp = await client.post("/api/v1/vms", data=data, headers=headers)
        assert resp.status == 400, data
        _assert_error(await resp.json(), "bad_request")


async def test_wrong_content_type_is_415(make_client: ClientFactory) -> None:
    client = await make_client(make_app())
    body = json.dumps({"name": "a"})
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml"):
        resp = await client.post("/api/v1/vms", data=body, headers={"Content-Type": content_type})
        assert resp.status == 415, content_type
        _assert_error(await resp.json(), "unsupported_media_type")
    resp = await client.post(
        "/api/v1/vms", data=body, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert resp.status == 201


async def test_viper_errors_keep_status_and_details(make_client: ClientFactory) -> None:
    client = await make_client(make_app())
    resp = await client.post("/api/v1/vms", json={"name": "taken"})
    assert resp.status == 409
    assert _assert_error(await resp.json(), "already_exists")["details"] == {"name": "taken"}
    resp = await client.get("/state")
    assert resp.status == 409
    details = _assert_error(await resp.json(), "invalid_state")["details"]
    assert details == {"state": "starting", "required": ["running"]}


async def test_http_errors_and_bugs_are_json(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client(make_app())
    resp = await client.get("/nowhere")
    assert resp.status == 404
    _assert_error(await resp.json(), "not_found")
    resp = await client.delete("/api/v1/vms")
    assert resp.status == 405
    error = _assert_error(await resp.json(), "method_not_allowed")
    assert "GET" in error["details"]["allowed"]
    assert "GET" in resp.headers["Allow"]
    resp = await client.get("/boom")
    assert resp.status == 500
    error = _assert_error(await resp.json(), "internal")
    assert "bug" not in error["message"]
    assert "unhandled error in GET /boom" in caplog.text


async def test_auth_off_lets_everything_through(make_client: ClientFactory) -> None:
    client = await make_client(make_app(None))
    assert (await client.get("/api/v1/vms")).status == 200


async def test_auth_on(make_client: ClientFactory) -> None:
    client = await make_client(make_app(KEY))
    assert (await client.get("/healthz")).status == 200
    resp = await client.get("/api/v1/vms")
    assert resp.status == 401
    _assert_error(await resp.json(), "unauthorized")
    for header in ("Bearer wrong", f"Basic {KEY}", "Bearer", KEY):
        resp = await client.get("/api/v1/vms", headers={"Authorization": header})
        assert resp.status == 401, header
    ok = await client.get("/api/v1/vms", headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status == 200
    # ?token= only for the DevTools proxy and WebSocket routes.
    assert (await client.get("/api/v1/vms", params={"token": KEY})).status == 401
    ws = await client.ws_connect(f"/ws/v1/events?token={KEY}")
    assert (await ws.receive_str()) == "hello"
    await ws.close()
    ws = await client.ws_connect(f"/api/v1/vms/a/cdp/devtools/page/X?token={KEY}")
    assert (await ws.receive_str()) == "hello"
    await ws.close()
    resp = await client.get("/ws/v1/events", params={"token": "nope"})
    assert resp.status == 401
    # Unknown routes are refused before they are looked up: no route probing without a key.
    assert (await client.get("/nowhere")).status == 401


async def test_websocket_origin(make_client: ClientFactory) -> None:
    client = await make_client(make_app())
    for origin in (None, "http://127.0.0.1:9999", "http://localhost", f"http://{client.host}"):
        headers = {"Origin": origin} if origin else {}
        ws = await client.ws_connect("/ws/v1/events", headers=headers)
        assert (await ws.receive_str()) == "hello"
        await ws.close()
    resp = await client.get(
        "/ws/v1/events",
        headers={
            "Origin": "https://evil.example",
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    )
    assert resp.status == 403
    _assert_error(await resp.json(), "forbidden")


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        (None, "h:1", True),
        ("http://127.0.0.1:3000", "example.com", True),
        ("http://[::1]:3000", "example.com", True),
        ("http://app.localhost", "example.com", True),
        ("https://viper.example.com", "viper.example.com:7777", True),
        ("https://evil.example", "viper.example.com:7777", False),
        ("null", "h", False),
        ("file://", "h", False),
        ("http://10.0.0.5", "10.0.0.6:7777", False),
    ],
)
def test_origin_allowed(origin: str | None, host: str, allowed: bool) -> None:
    assert origin_allowed(origin, host) is allowed


def _unused(client: TestClient[Any, Any]) -> None:  # keeps TestClient imported for typing
    del client
