"""Fixtures for the HTTP layer's tests.

Unit tests build small apps with `make_client`. The end-to-end modules share, per module, one
real server (`create_app` with the `process` runtime: real agent, real Chromium, a real SQLite
file under a temporary state dir) and, where safe, one running VM; `page_server` serves the
pages the browser visits, on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from viper_server.app import create_app
from viper_server.config import ServerConfig

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]
Client = TestClient[web.Request, web.Application]

PAGE = """<!doctype html>
<html><head><title>Viper test page</title></head>
<body style="background:#3a7">
<h1 id="greeting">Hello from the test server</h1>
<button id="go" onclick="document.title = 'clicked'">Go</button>
<input id="box">
</body></html>
"""


def needs_chromium() -> None:
    """Skip unless Chromium and the agent command are installed."""
    if shutil.which("chromium") is None and not Path("/usr/bin/chromium").exists():
        pytest.skip("Chromium is not installed")


@pytest.fixture
def make_client(aiohttp_client: Any) -> ClientFactory:
    """`await make_client(app)`: a test client for `app` on a loopback port."""

    async def make(app: web.Application) -> Client:
        client: Client = await aiohttp_client(app)
        return client

    return make


@contextlib.asynccontextmanager
async def running_server(api_key: str | None = None) -> AsyncIterator[Client]:
    """A real viper-server (process runtime) on 127.0.0.1 with its state in a temp dir."""
    needs_chromium()
    state = Path(tempfile.mkdtemp(prefix="viper-web-"))
    try:
        config = ServerConfig(
            state_dir=state, runtime="process", api_key=api_key, stop_vms_on_exit=True
        )
        server = TestServer(create_app(config), host="127.0.0.1")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        async with TestClient(server, headers=headers) as client:
            yield client
    finally:
        shutil.rmtree(state, ignore_errors=True)


@contextlib.asynccontextmanager
async def running_vm(client: Client, name: str) -> AsyncIterator[dict[str, Any]]:
    """A VM created with `?wait=true` (so running), deleted afterwards."""
    resp = await client.post("/api/v1/vms", params={"wait": "true"}, json={"name": name})
    body = await resp.json()
    assert resp.status == 201, body
    try:
        yield body
    finally:
        await client.delete(f"/api/v1/vms/{name}")


async def _page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def page_server() -> AsyncIterator[str]:
    """Base URL of an HTTP server on 127.0.0.1 serving `PAGE` at `/page.html`."""
    app = web.Application()
    app.router.add_get("/page.html", _page)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()
