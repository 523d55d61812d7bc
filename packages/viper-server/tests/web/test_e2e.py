"""End to end through the real server: VMs, browser passthrough, DevTools proxy, events.

One server (process runtime: real agent and Chromium, real SQLite) and one running VM are
shared by the module; the lifecycle test makes and deletes its own VM.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from openapi_spec_validator import validate
from playwright.async_api import async_playwright
from prometheus_client.parser import text_string_to_metric_families

from .conftest import Client, running_server, running_vm
from .sse import read_sse

pytestmark = pytest.mark.asyncio(loop_scope="module")

VM_NAME = "web-e2e"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Lifecycle events only: VM_LOG lines come whenever the VM writes output.
LIFECYCLE = "VM_CREATED,VM_STARTING,VM_RUNNING,VM_STOPPING,VM_STOPPED,VM_CRASHED,VM_DELETED"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client() -> AsyncIterator[Client]:
    async with running_server() as c:
        yield c


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def vm(client: Client) -> AsyncIterator[dict[str, Any]]:
    async with running_vm(client, VM_NAME) as body:
        yield body


def _base(client: Client) -> str:
    return str(client.make_url("")).rstrip("/")


async def _error(resp: aiohttp.ClientResponse, status: int, code: str) -> dict[str, Any]:
    body = await resp.json()
    assert resp.status == status, body
    assert body["error"]["code"] == code, body
    assert set(body["error"]) == {"code", "message", "details"}
    return body["error"]  # type: ignore[no-any-return]


async def test_vm_is_running(client: Client, vm: dict[str, Any]) -> None:
    assert vm["status"] == "running"
    assert vm["runtime"] == "process"
    assert vm["isolated"] is False
    resp = await client.get(f"/api/v1/vms/{VM_NAME}")
    assert (await resp.json())["status"] == "running"
    listing = await (await client.get("/api/v1/vms", params={"status": "running"})).json()
    assert VM_NAME in [v["name"] for v in listing["vms"]]
    stopped = await (await client.get("/api/v1/vms", params={"status": "stopped"})).json()
    assert VM_NAME not in [v["name"] for v in stopped["vms"]]


async def test_browser_passthrough(client: Client, vm: dict[str, Any], page_server: str) -> None:
    url = f"{page_server}/page.html"
    resp = await client.post(f"/api/v1/vms/{VM_NAME}/navigation", json={"url": url})
    result = await resp.json()
    assert resp.status == 200, result
    assert result["title"] == "Viper test page"
    assert result["status"] == 200
    state = await (await client.get(f"/api/v1/vms/{VM_NAME}/navigation")).json()
    assert state["url"] == url
    resp = await client.get(
        f"/api/v1/vms/{VM_NAME}/dom", params={"selector": "#greeting", "format": "text"}
    )
    assert (await resp.json())["value"] == "Hello from the test server"
    resp = await client.post(f"/api/v1/vms/{VM_NAME}/script/evaluate", json={"expression": "6 * 7"})
    assert (await resp.json())["value"] == 42
    resp = await client.get(f"/api/v1/vms/{VM_NAME}/screenshot")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "image/png"
    assert (await resp.read()).startswith(PNG_MAGIC)
    health = await (await client.get(f"/api/v1/vms/{VM_NAME}/health")).json()
    assert health["browser"]["status"] == "running"


async def test_more_passthrough(client: Client, vm: dict[str, Any], page_server: str) -> None:
    base = f"/api/v1/vms/{VM_NAME}"
    await client.post(f"{base}/navigation", json={"url": f"{page_server}/page.html"})
    # A bodyless POST is fine, with or without a JSON Content-Type.
    resp = await client.post(f"{base}/navigation/reload")
    assert resp.status == 200, await resp.text()
    resp = await client.post(
        f"{base}/navigation/reload", headers={"Content-Type": "application/json"}
    )
    assert resp.status == 200, await resp.text()
    resp = await client.post(f"{base}/navigation/viewport", json={"width": 400, "height": 300})
    assert resp.status == 200, await resp.text()
    width = await client.post(f"{base}/script/evaluate", json={"expression": "innerWidth"})
    assert (await width.json())["value"] == 400
    resp = await client.post(f"{base}/dom/type", json={"selector": "#box", "text": "typed"})
    assert resp.status == 200, await resp.text()
    value = await client.get(
        f"{base}/dom", params={"selector": "#box", "format": "attribute", "name": "id"}
    )
    assert (await value.json())["value"] == "box"
    resp = await client.post(f"{base}/targets", json={"url": f"{page_server}/page.html"})
    tab = await resp.json()
    assert resp.status in (200, 201), tab
    listing = await (await client.get(f"{base}/targets")).json()
    assert tab["id"] in [t["id"] for t in listing["targets"]]
    resp = await client.delete(f"{base}/targets/{tab['id']}")
    assert resp.status in (200, 204), await resp.text()
    profile = await (await client.get(f"{base}/profile")).json()
    assert "cookies" in profile
    resp = await client.put(f"{base}/profile", json=profile)
    assert resp.status == 200, await resp.text()
    devtools = await (await client.get(f"{base}/devtools")).json()
    host = client.make_url("").host
    assert devtools["websocket_url"].startswith(f"ws://{host}:")
    assert f"/api/v1/vms/{VM_NAME}/cdp/devtools/browser/" in devtools["websocket_url"]
    resp = await client.get(f"{base}/screenshot", params={"format": "jpeg", "quality": "50"})
    assert resp.headers["Content-Type"] == "image/jpeg"
    assert (await resp.read()).startswith(b"\xff\xd8")


async def test_agent_errors_pass_through(client: Client, vm: dict[str, Any]) -> None:
    # The agent validates its own input; its error JSON reaches the caller unchanged.
    resp = await client.post(f"/api/v1/vms/{VM_NAME}/navigation", json={"url": "nope"})
    error = await _error(resp, 422, "validation_failed")
    assert any("$.url" in line for line in error["details"]["errors"])
    resp = await client.post(
        f"/api/v1/vms/{VM_NAME}/script/evaluate", json={"expression": "throw new Error('boom')"}
    )
    await _error(resp, 422, "script_error")
    resp = await client.post(
        f"/api/v1/vms/{VM_NAME}/navigation", data="url=x", headers={"Content-Type": "text/plain"}
    )
    await _error(resp, 415, "unsupported_media_type")
    resp = await client.get("/api/v1/vms/nobody/screenshot")
    await _error(resp, 404, "not_found")


async def test_bad_input_changes_nothing(client: Client, vm: dict[str, Any]) -> None:
    before = await (await client.get("/api/v1/vms")).json()
    post = "/api/v1/vms"
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"json": {"name": "x1", "colour": "red"}}, 422, "validation_failed"),
        ({"json": {"name": "x2", "cpu_cores": "2"}}, 422, "validation_failed"),
        ({"json": {"name": "x3", "memory_mb": True}}, 422, "validation_failed"),
        ({"json": {"name": "Not_A_Name"}}, 422, "validation_failed"),
        ({"json": {"name": "x4", "runtime": "docker"}}, 422, "validation_failed"),
        ({"json": [{"name": "x5"}]}, 422, "validation_failed"),
        ({"data": b'{"name": "x6"', "headers": {"Content-Type": "application/json"}}, 400,
         "bad_request"),
        ({"data": b"", "headers": {"Content-Type": "application/json"}}, 400, "bad_request"),
        ({"data": b'{"name": "x7"}', "headers": {"Content-Type": "text/plain"}}, 415,
         "unsupported_media_type"),
        ({"data": b"name=x8"}, 415, "unsupported_media_type"),
        ({"json": {"name": VM_NAME}}, 409, "already_exists"),
        ({"json": {"name": "x9"}, "params": {"wait": "maybe"}}, 422, "validation_failed"),
    ]  # fmt: skip
    for kwargs, status, code in cases:
        await _error(await client.post(post, **kwargs), status, code)
    await _error(await client.get("/api/v1/vms", params={"status": "asleep"}), 422,
                 "validation_failed")  # fmt: skip
    await _error(await client.get("/api/v1/vms/nobody"), 404, "not_found")
    await _error(await client.delete("/api/v1/vms/nobody"), 404, "not_found")
    await _error(await client.put("/api/v1/vms", json={}), 405, "method_not_allowed")
    await _error(await client.get("/api/v1/nowhere"), 404, "not_found")
    after = await (await client.get("/api/v1/vms")).json()
    assert after == before


async def test_cdp_discovery_is_rewritten(client: Client, vm: dict[str, Any]) -> None:
    host = client.make_url("").host
    port = client.make_url("").port
    prefix = f"ws://{host}:{port}/api/v1/vms/{VM_NAME}/cdp/devtools/"
    for path in ("json/version", "json/version/"):
        resp = await client.get(f"/api/v1/vms/{VM_NAME}/cdp/{path}")
        version = await resp.json()
        assert resp.status == 200, version
        assert version["webSocketDebuggerUrl"].startswith(prefix + "browser/")
        assert "Browser" in version
    for path in ("json/list", "json"):
        targets = await (await client.get(f"/api/v1/vms/{VM_NAME}/cdp/{path}")).json()
        pages = [t for t in targets if t["type"] == "page"]
        assert pages
        for target in pages:
            assert target["webSocketDebuggerUrl"] == f"{prefix}page/{target['id']}"
    await _error(await client.get("/api/v1/vms/nobody/cdp/json/version"), 404, "not_found")


async def test_cdp_websocket_relay(client: Client, vm: dict[str, Any]) -> None:
    version = await (await client.get(f"/api/v1/vms/{VM_NAME}/cdp/json/version")).json()
    async with client.session.ws_connect(version["webSocketDebuggerUrl"], max_msg_size=0) as ws:
        await ws.send_str(json.dumps({"id": 1, "method": "Browser.getVersion"}))
        msg = await ws.receive(timeout=10)
        assert msg.type is aiohttp.WSMsgType.TEXT
        assert json.loads(msg.data)["result"]["product"].startswith(("Chrome", "Headless"))
        metrics = await (await client.get("/metrics")).text()
        assert "viper_proxy_connections_active 1" in metrics
    for _ in range(50):
        metrics = await (await client.get("/metrics")).text()
        if "viper_proxy_connections_active 0" in metrics:
            break
        await asyncio.sleep(0.1)
    assert "viper_proxy_connections_active 0" in metrics


async def test_playwright_over_the_proxy(
    client: Client, vm: dict[str, Any], page_server: str
) -> None:
    async with async_playwright() as pw:
        browser = await pw.chromium.connect_over_cdp(f"{_base(client)}/api/v1/vms/{VM_NAME}/cdp")
        try:
            context = browser.contexts[0]
            page = await context.new_page()
            await page.goto(f"{page_server}/page.html")
            assert await page.title() == "Viper test page"
            await page.click("#go")
            assert await page.title() == "clicked"
            # A message far above aiohttp's 4 MiB default WebSocket cap crosses both legs.
            size = 12 * 1024 * 1024
            length = await page.evaluate(f"'x'.repeat({size}).length")
            big = await page.evaluate(f"'y'.repeat({size})")
            assert length == size
            assert len(big) == size
            shot = await page.screenshot(full_page=True)
            assert shot.startswith(PNG_MAGIC)
            await page.close()
        finally:
            await browser.close()


async def test_logs_stream(client: Client, vm: dict[str, Any]) -> None:
    resp = await client.get(f"/api/v1/vms/{VM_NAME}/logs")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    async with asyncio.timeout(10):
        async for message in read_sse(resp):
            assert message.data
            break
    resp.close()


async def test_events_replay_and_websocket(client: Client, vm: dict[str, Any]) -> None:
    resp = await client.get(
        "/api/v1/events", params={"after": "0", "vm": VM_NAME, "types": LIFECYCLE}
    )
    seen = []
    async with asyncio.timeout(10):
        async for message in read_sse(resp):
            event = message.json()
            assert message.event == event["type"]
            assert message.id == str(event["id"])
            seen.append(event)
            if event["type"] == "VM_RUNNING":
                break
    resp.close()
    assert [e["type"] for e in seen] == ["VM_CREATED", "VM_STARTING", "VM_RUNNING"]
    # Reconnect after the first one: the replay starts right after it, none twice.
    resp = await client.get(
        "/api/v1/events",
        params={"vm": VM_NAME, "types": LIFECYCLE},
        headers={"Last-Event-ID": str(seen[0]["id"])},
    )
    async with asyncio.timeout(10):
        first = await anext(read_sse(resp))
    resp.close()
    assert first.json() == seen[1]
    params = {"after": "0", "vm": VM_NAME, "types": LIFECYCLE}
    async with client.ws_connect("/ws/v1/events", params=params) as ws:
        frames = [json.loads(await ws.receive_str(timeout=10)) for _ in range(3)]
    assert frames == seen
    await _error(await client.get("/api/v1/events", params={"types": "VM_EXPLODED"}), 400,
                 "bad_request")  # fmt: skip
    await _error(await client.get("/api/v1/events", headers={"Last-Event-ID": "x"}), 400,
                 "bad_request")  # fmt: skip


async def test_websocket_foreign_origin_refused(client: Client) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/ws/v1/events", headers={"Origin": "https://evil.example"})
    assert info.value.status == 403


async def test_lifecycle_with_live_events(client: Client, page_server: str) -> None:
    name = "web-life"
    stream = await client.get("/api/v1/events", params={"vm": name, "types": LIFECYCLE})
    assert stream.status == 200
    live = read_sse(stream)
    resp = await client.post("/api/v1/vms?wait=true", json={"name": name, "ttl_seconds": 600})
    assert resp.status == 201, await resp.text()
    assert resp.headers["Location"] == f"/api/v1/vms/{name}"
    resp = await client.post(
        f"/api/v1/vms/{name}/navigation", json={"url": f"{page_server}/page.html"}
    )
    assert resp.status == 200, await resp.text()
    shot = await client.get(f"/api/v1/vms/{name}/screenshot")
    assert (await shot.read()).startswith(PNG_MAGIC)
    resp = await client.delete(f"/api/v1/vms/{name}")
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["status"] == "stopped"
    types = []
    async with asyncio.timeout(10):
        async for message in live:
            types.append(message.event)
            if message.event == "VM_DELETED":
                break
    stream.close()
    assert types == [
        "VM_CREATED",
        "VM_STARTING",
        "VM_RUNNING",
        "VM_STOPPING",
        "VM_STOPPED",
        "VM_DELETED",
    ]
    names = [v["name"] for v in (await (await client.get("/api/v1/vms")).json())["vms"]]
    assert name not in names
    await _error(await client.get(f"/api/v1/vms/{name}/health"), 404, "not_found")


async def test_metrics(client: Client, vm: dict[str, Any]) -> None:
    resp = await client.get("/metrics")
    assert resp.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
    running = [s for s in families["viper_vms"].samples if s.labels["status"] == "running"]
    assert running[0].value >= 1
    assert families["viper_vm_creates"].samples[0].value >= 1
    assert families["viper_vm_start_seconds"].type == "histogram"
    assert families["viper_proxy_connections"].type == "counter"


async def test_openapi_is_valid_and_complete(client: Client) -> None:
    doc = await (await client.get("/api/v1/openapi.json")).json()
    validate(doc)
    registered = {
        (route.method.lower(), route.resource.canonical)
        for route in client.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert registered == documented
    undocumented = [
        (m, p)
        for p, ops in doc["paths"].items()
        for m, op in ops.items()
        if op["tags"] == ["other"]
    ]
    assert not undocumented
    create = doc["paths"]["/api/v1/vms"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CreateVMRequest"
    }
    assert doc["components"]["schemas"]["CreateVMRequest"]["additionalProperties"] is False
    assert doc["paths"]["/healthz"]["get"]["security"] == []
