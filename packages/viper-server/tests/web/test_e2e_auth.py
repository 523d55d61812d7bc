"""Auth end to end: a server with an API key, a VM, the DevTools proxy with header or ?token=."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import async_playwright

from .conftest import Client, running_server, running_vm

pytestmark = pytest.mark.asyncio(loop_scope="module")

KEY = "test-key-0123456789"
VM_NAME = "web-auth"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client() -> AsyncIterator[Client]:
    async with running_server(api_key=KEY) as c:  # the client sends the key by default
        yield c


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def vm(client: Client) -> AsyncIterator[dict[str, Any]]:
    async with running_vm(client, VM_NAME) as body:
        yield body


def _url(client: Client, path: str) -> str:
    return str(client.make_url(path))


async def test_key_required_everywhere_but_healthz(client: Client, vm: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as anon:
        async with anon.get(_url(client, "/healthz")) as resp:
            assert resp.status == 200
        for path in (
            "/api/v1/vms",
            f"/api/v1/vms/{VM_NAME}",
            "/api/v1/system",
            "/metrics",
            "/api/v1/openapi.json",
            f"/api/v1/vms/{VM_NAME}/cdp/json/version",
            f"/api/v1/vms/{VM_NAME}/screenshot",
        ):
            async with anon.get(_url(client, path)) as resp:
                assert resp.status == 401, path
                assert (await resp.json())["error"]["code"] == "unauthorized"
        wrong = {"Authorization": "Bearer not-the-key"}
        async with anon.post(
            _url(client, "/api/v1/vms"), json={"name": "sneak"}, headers=wrong
        ) as resp:
            assert resp.status == 401
        # ?token= is for the DevTools proxy and WebSockets only, not REST.
        async with anon.get(_url(client, "/api/v1/vms"), params={"token": KEY}) as resp:
            assert resp.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await anon.ws_connect(_url(client, "/ws/v1/events"))
        assert info.value.status == 401
        async with anon.ws_connect(_url(client, f"/ws/v1/events?token={KEY}&after=0")) as ws:
            event = json.loads(await ws.receive_str(timeout=10))
            assert event["type"] == "VM_CREATED"
    names = [v["name"] for v in (await (await client.get("/api/v1/vms")).json())["vms"]]
    assert names == [VM_NAME]
    system = await (await client.get("/api/v1/system")).json()
    assert system["auth_required"] is True


async def test_cdp_with_token_query(client: Client, vm: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as anon:
        version_url = _url(client, f"/api/v1/vms/{VM_NAME}/cdp/json/version")
        async with anon.get(version_url, params={"token": KEY}) as resp:
            version = await resp.json()
            assert resp.status == 200, version
        ws_url = version["webSocketDebuggerUrl"]
        assert ws_url.endswith(f"?token={KEY}")
        async with anon.ws_connect(ws_url, max_msg_size=0) as ws:
            await ws.send_str(json.dumps({"id": 7, "method": "Browser.getVersion"}))
            answer = json.loads(await ws.receive_str(timeout=10))
            assert answer["id"] == 7
            assert "product" in answer["result"]
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await anon.ws_connect(ws_url.split("?")[0])
        assert info.value.status == 401
    async with async_playwright() as pw:
        # A WebSocket endpoint is used as given, so the token rides along in the URL.
        browser = await pw.chromium.connect_over_cdp(ws_url)
        try:
            page = await browser.contexts[0].new_page()
            assert await page.evaluate("1 + 1") == 2
            await page.close()
        finally:
            await browser.close()


async def test_playwright_with_bearer_header(client: Client, vm: dict[str, Any]) -> None:
    async with async_playwright() as pw:
        browser = await pw.chromium.connect_over_cdp(
            _url(client, f"/api/v1/vms/{VM_NAME}/cdp"),
            headers={"Authorization": f"Bearer {KEY}"},
        )
        try:
            assert browser.version
        finally:
            await browser.close()
