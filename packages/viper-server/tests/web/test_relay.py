"""The DevTools WebSocket relay against a scripted upstream, for what Chromium cannot be made to do.

The relay (the thing under test) is the real route; the engine is a stand-in that only maps a
VM name to the scripted agent's URL, and the agent is an aiohttp app that echoes frames,
closes with chosen codes and records the close code it receives.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from viper_protocol.errors import NotFound
from viper_server.keys import engine_key, proxy_session_key, proxy_stats_key, streams_key
from viper_server.web.middleware import error_middleware
from viper_server.web.routes import cdp
from viper_server.web.streams import ProxyStats, StreamRegistry

from .conftest import ClientFactory

BIG = 20 * 1024 * 1024


class ScriptedAgent:
    """An upstream `/devtools/page/{id}` that echoes, and closes on request."""

    def __init__(self) -> None:
        self.received_close: asyncio.Queue[int | None] = asyncio.Queue()

    async def devtools(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT and msg.data.startswith("close:"):
                await ws.close(code=int(msg.data.split(":")[1]), message=b"bye")
                return ws
            if msg.type is WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        await self.received_close.put(ws.close_code)
        return ws


class StandInEngine:
    """Maps VM names to agent URLs; records activity."""

    def __init__(self, agents: dict[str, str]) -> None:
        self.agents = agents
        self.touched: list[str] = []

    async def agent_url(self, name: str) -> str:
        if name not in self.agents:
            raise NotFound(f"no VM named {name!r}")
        return self.agents[name]

    def touch(self, name: str) -> None:
        self.touched.append(name)


@pytest_asyncio.fixture
async def agent() -> AsyncIterator[tuple[ScriptedAgent, str]]:
    scripted = ScriptedAgent()
    app = web.Application()
    app.router.add_get("/devtools/{kind}/{id}", scripted.devtools)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield scripted, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def _relay_app(agents: dict[str, str]) -> tuple[web.Application, StandInEngine]:
    app = web.Application(middlewares=[error_middleware])
    engine = StandInEngine(agents)
    app[engine_key] = cast(Any, engine)
    app[streams_key] = StreamRegistry()
    app[proxy_stats_key] = ProxyStats()

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:
            app[proxy_session_key] = session
            yield

    app.cleanup_ctx.append(session_ctx)
    app.router.add_routes(cdp.routes)
    return app, engine


async def test_frames_kinds_sizes_and_close_codes(
    make_client: ClientFactory, agent: tuple[ScriptedAgent, str]
) -> None:
    scripted, url = agent
    # "down" points at a port where nothing listens: the agent is unreachable.
    app, engine = await _relay_app({"vm1": url, "down": "http://127.0.0.1:9"})
    client = await make_client(app)
    path = "/api/v1/vms/vm1/cdp/devtools/page/ABC"

    async with client.ws_connect(path, max_msg_size=0) as ws:
        await ws.send_str('{"id":1}')
        msg = await ws.receive(timeout=5)
        assert (msg.type, msg.data) == (WSMsgType.TEXT, '{"id":1}')
        await ws.send_bytes(b"\x00\x01binary")
        msg = await ws.receive(timeout=5)
        assert (msg.type, msg.data) == (WSMsgType.BINARY, b"\x00\x01binary")
        big = "z" * BIG
        await ws.send_str(big)
        msg = await ws.receive(timeout=30)
        assert msg.type is WSMsgType.TEXT
        assert len(msg.data) == BIG
        assert app[proxy_stats_key].active == 1
        # The upstream closes with 4001: the client sees 4001.
        await ws.send_str("close:4001")
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.CLOSE
        assert msg.data == 4001
    assert "vm1" in engine.touched

    # The client closes with 4002: the upstream sees 4002.
    ws = await client.ws_connect(path)
    await ws.send_str("ping")
    assert (await ws.receive_str(timeout=5)) == "ping"
    await ws.close(code=4002)
    assert await asyncio.wait_for(scripted.received_close.get(), 5) == 4002
    for _ in range(50):
        if app[proxy_stats_key].active == 0:
            break
        await asyncio.sleep(0.05)
    assert app[proxy_stats_key].active == 0
    assert app[proxy_stats_key].total == 2

    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/api/v1/vms/down/cdp/devtools/page/ABC")
    assert info.value.status == 502
    resp = await client.get("/api/v1/vms/down/cdp/devtools/page/ABC")
    assert resp.status == 502
    assert (await resp.json())["error"]["code"] == "agent_unavailable"
    resp = await client.get("/api/v1/vms/ghost/cdp/devtools/page/ABC")
    assert resp.status == 404
    resp = await client.get("/api/v1/vms/vm1/cdp/devtools/worker/ABC")
    assert resp.status == 404


async def test_shutdown_closes_relayed_sockets(
    make_client: ClientFactory, agent: tuple[ScriptedAgent, str]
) -> None:
    scripted, url = agent
    app, _ = await _relay_app({"vm1": url})
    client = await make_client(app)
    ws = await client.ws_connect("/api/v1/vms/vm1/cdp/devtools/browser/B")
    await ws.send_str("hi")
    assert (await ws.receive_str(timeout=5)) == "hi"
    await app[streams_key].close_all()
    msg = await ws.receive(timeout=5)
    assert msg.type is WSMsgType.CLOSE
    assert msg.data == 1001
    assert await asyncio.wait_for(scripted.received_close.get(), 5) == 1001
    await ws.close()


async def test_passthrough_unreachable_and_slow_agent(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from viper_server.web import upstream
    from viper_server.web.routes import agent_proxy

    seen: list[tuple[str, str, bytes, str | None]] = []

    async def slow(request: web.Request) -> web.Response:
        seen.append((request.method, request.path_qs, await request.read(), request.content_type))
        if request.query.get("sleep"):
            await asyncio.sleep(float(request.query["sleep"]))
        return web.json_response(
            {"error": {"code": "x", "message": "y", "details": {}}}, status=418
        )

    agent_app = web.Application()
    agent_app.router.add_route("*", "/v1/{tail:.*}", slow)
    agent_server = TestServer(agent_app, host="127.0.0.1")
    await agent_server.start_server()
    try:
        app, engine = await _relay_app(
            {"vm1": str(agent_server.make_url("")).rstrip("/"), "down": "http://127.0.0.1:9"}
        )
        app.router.add_routes(agent_proxy.routes)
        client = await make_client(app)
        # Method, path, query and body reach the agent; its answer comes back unchanged.
        resp = await client.post(
            "/api/v1/vms/vm1/dom/click?token=secret&x=1", json={"selector": "a"}
        )
        assert resp.status == 418
        assert (await resp.json())["error"]["code"] == "x"
        assert seen[-1] == ("POST", "/v1/dom/click?x=1", b'{"selector": "a"}', "application/json")
        resp = await client.delete("/api/v1/vms/vm1/targets/T1")
        assert resp.status == 418
        assert seen[-1][:2] == ("DELETE", "/v1/targets/T1")
        assert engine.touched.count("vm1") == 2

        resp = await client.get("/api/v1/vms/down/health")
        assert resp.status == 502
        assert (await resp.json())["error"]["code"] == "agent_unavailable"

        monkeypatch.setattr(upstream, "TIMEOUT_MARGIN", 0.2)
        resp = await client.get(
            "/api/v1/vms/vm1/screenshot", params={"timeout_ms": "100", "sleep": "3"}
        )
        assert resp.status == 504
        assert (await resp.json())["error"]["code"] == "agent_timeout"
    finally:
        await agent_server.close()
