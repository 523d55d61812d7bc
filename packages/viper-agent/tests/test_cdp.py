"""The typed CDP layer: pinned protocol vs the installed Chromium, and the connection itself."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import AgentClient, Site
from viper_agent.cdp import CDPConnection, CDPConnectionClosed, CDPError, CDPEvent
from viper_agent.cdp.generated import browser, page, runtime, target
from viper_agent.keys import supervisor_key

PINNED = Path(__file__).parents[1] / "scripts" / "cdp_protocol.json"


def _shape(param: dict[str, Any], domain: str) -> tuple[object, ...]:
    ref = param.get("$ref")
    if ref is not None and "." not in ref:
        ref = f"{domain}.{ref}"
    items = param.get("items")
    item = _shape(items, domain) if items else None
    return (param.get("name"), bool(param.get("optional")), param.get("type"), ref, item)


def _items(domain: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in domain.get(kind, [])}


async def test_every_generated_command_matches_the_installed_chromium(agent: AgentClient) -> None:
    protocol = await (await agent.get("/json/protocol")).json()
    live = {d["domain"]: d for d in protocol["domains"]}
    pinned = json.loads(PINNED.read_text())
    checked = 0
    for dom in pinned["domains"]:
        name = dom["domain"]
        assert name in live, f"{name} is not in the installed Chromium"
        for kind, fields in (("commands", "parameters"), ("events", "parameters")):
            have = _items(live[name], kind)
            for cmd in dom.get(kind, []):
                assert cmd["name"] in have, f"{name}.{cmd['name']} is gone"
                want = [_shape(p, name) for p in cmd.get(fields, [])]
                got = [_shape(p, name) for p in have[cmd["name"]].get(fields, [])]
                assert got == want, f"{name}.{cmd['name']} {fields} changed"
                if kind == "commands":
                    want_ret = [_shape(p, name) for p in cmd.get("returns", [])]
                    got_ret = [_shape(p, name) for p in have[cmd["name"]].get("returns", [])]
                    assert got_ret == want_ret, f"{name}.{cmd['name']} returns changed"
                checked += 1
        live_types = {t["id"]: t for t in live[name].get("types", [])}
        for typedef in dom.get("types", []):
            assert typedef["id"] in live_types, f"type {name}.{typedef['id']} is gone"
            want = [_shape(p, name) for p in typedef.get("properties", [])]
            got = [_shape(p, name) for p in live_types[typedef["id"]].get("properties", [])]
            assert got == want, f"type {name}.{typedef['id']} changed"
    assert checked > 40


@pytest.fixture
async def conn(agent: AgentClient) -> Any:
    app = agent.app
    assert app is not None
    url = app[supervisor_key].browser_ws_url
    assert url is not None
    connection = await CDPConnection.connect(url)
    try:
        yield connection
    finally:
        await connection.close()


async def test_commands_sessions_and_typed_events(conn: CDPConnection, site: Site) -> None:
    version = await conn.execute(browser.get_version())
    assert version.product.startswith("Chrome/")
    created = await conn.execute(target.create_target(url="about:blank"))
    try:
        attached = await conn.execute(
            target.attach_to_target(target_id=created.target_id, flatten=True)
        )
        session = conn.session(attached.session_id)
        await session.execute(page.enable())
        events: list[CDPEvent] = []
        remove = conn.add_listener(events.append)
        navigated = asyncio.ensure_future(
            conn.wait_for(
                lambda e: (
                    isinstance(e.event, page.FrameNavigated) and e.session_id == session.session_id
                ),
                timeout=10,
            )
        )
        result = await session.execute(page.navigate(url=site.url("/second")))
        assert result.frame_id
        event = await navigated
        assert isinstance(event.event, page.FrameNavigated)
        assert event.event.frame.url == site.url("/second")
        remove()
        assert any(e.method == "Page.frameNavigated" for e in events)
        value = await session.execute(runtime.evaluate(expression="6 * 7", return_by_value=True))
        assert value.result.value == 42
    finally:
        await conn.execute(target.close_target(target_id=created.target_id))


async def test_chromium_errors_and_timeouts(conn: CDPConnection) -> None:
    with pytest.raises(CDPError) as info:
        await conn.send("Nope.nothing")
    assert info.value.code == -32601
    assert info.value.method == "Nope.nothing"
    with pytest.raises(CDPError):
        await conn.execute(target.attach_to_target(target_id="missing", flatten=True))
    created = await conn.execute(target.create_target(url="about:blank"))
    attached = await conn.execute(
        target.attach_to_target(target_id=created.target_id, flatten=True)
    )
    session = conn.session(attached.session_id)
    with pytest.raises(TimeoutError):
        await session.execute(
            runtime.evaluate(expression="new Promise(() => {})", await_promise=True),
            timeout=0.2,
        )
    # The connection is still fine after a timed-out call.
    assert (await conn.execute(browser.get_version())).protocol_version == "1.3"
    await conn.execute(target.close_target(target_id=created.target_id))


async def test_peer_going_away_fails_pending_and_later_calls() -> None:
    # A scripted CDP peer: real Chromium cannot be made to drop a socket mid-call on cue.
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            message = json.loads(msg.data)
            if message["method"] == "Browser.getVersion":
                await ws.close(code=1011)
        return ws

    app = web.Application()
    app.router.add_get("/devtools/browser/x", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        conn = await CDPConnection.connect(str(server.make_url("/devtools/browser/x")))
        with pytest.raises(CDPConnectionClosed):
            await conn.execute(browser.get_version(), timeout=5)
        assert conn.closed.is_set()
        with pytest.raises(CDPConnectionClosed):
            await conn.send("Target.getTargets")
        with pytest.raises(CDPConnectionClosed):
            await conn.wait_for(lambda e: True, timeout=1)
        await conn.close()
    finally:
        await server.close()
    with pytest.raises(CDPConnectionClosed):
        await CDPConnection.connect("ws://127.0.0.1:9/devtools/browser/none", timeout=2)


async def test_pinned_protocol_is_a_subset() -> None:
    pinned = json.loads(PINNED.read_text())
    names = {d["domain"] for d in pinned["domains"]}
    assert {"Page", "Runtime", "Target", "Network", "Input", "Storage", "Fetch"} <= names
    assert len(PINNED.read_bytes()) < 400_000
    # An unknown event parses to None rather than failing.
    from viper_agent.cdp.generated import parse_event

    assert parse_event("Nope.happened", {}) is None
    assert isinstance(
        parse_event("Target.targetDestroyed", {"targetId": "T"}), target.TargetDestroyed
    )
