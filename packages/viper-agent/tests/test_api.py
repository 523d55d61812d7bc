"""Every agent endpoint, happy path and error path, against real Chromium and a real site."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import aiohttp

from tests.conftest import AgentClient, Site


async def _json(resp: Any, status: int = 200) -> Any:
    body = await resp.json()
    assert resp.status == status, body
    return body


def _error(body: Any, code: str) -> dict[str, Any]:
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return dict(body["error"])


async def go(agent: AgentClient, url: str, **extra: Any) -> Any:
    return await _json(await agent.post("/v1/navigation", json={"url": url, **extra}))


# --- health, devtools, discovery ---------------------------------------------------------------


async def test_health_reports_a_running_browser(agent: AgentClient) -> None:
    body = await _json(await agent.get("/v1/health"))
    assert body["status"] == "ok"
    assert body["browser"]["status"] == "running"
    assert body["browser"]["pid"] > 0
    assert body["browser"]["version"].startswith("Chrome/")
    assert body["uptime_seconds"] >= 0


async def test_devtools_metadata_points_at_the_agent(agent: AgentClient) -> None:
    body = await _json(await agent.get("/v1/devtools"))
    host = f"127.0.0.1:{agent.server.port}"
    assert body["websocket_path"].startswith("/devtools/browser/")
    assert body["websocket_url"] == f"ws://{host}{body['websocket_path']}"
    assert body["protocol_version"] == "1.3"


async def test_json_version_with_and_without_slash(agent: AgentClient) -> None:
    host = f"127.0.0.1:{agent.server.port}"
    for path in ("/json/version", "/json/version/"):
        body = await _json(await agent.get(path))
        assert body["webSocketDebuggerUrl"].startswith(f"ws://{host}/devtools/browser/")


async def test_json_list_rewrites_every_url(agent: AgentClient) -> None:
    host = f"127.0.0.1:{agent.server.port}"
    pages = [t for t in await _json(await agent.get("/json/list")) if t["type"] == "page"]
    assert pages
    for t in pages:
        assert t["webSocketDebuggerUrl"] == f"ws://{host}/devtools/page/{t['id']}"
        assert f"ws={host}/devtools/page/" in t["devtoolsFrontendUrl"]


async def test_devtools_socket_relays_and_rejects_unknown_targets(agent: AgentClient) -> None:
    body = await _json(await agent.get("/v1/devtools"))
    async with agent.ws_connect(body["websocket_path"], headers={"Origin": "http://evil"}) as ws:
        await ws.send_json({"id": 1, "method": "Browser.getVersion"})
        reply = await ws.receive_json(timeout=10)
        assert reply["id"] == 1
        assert reply["result"]["product"].startswith("Chrome/")
    resp = await agent.get("/devtools/page/NOPE")
    _error(await _json(resp, 404), "not_found")


async def test_discovery_follows_the_host_the_client_used(agent: AgentClient) -> None:
    # What the server's proxy or a VM's address looks like: a name Chromium itself would refuse.
    headers = {"Host": "browser-7.viper.internal:8080"}
    body = await _json(await agent.get("/json/version/", headers=headers))
    assert body["webSocketDebuggerUrl"].startswith("ws://browser-7.viper.internal:8080/devtools/")
    listed = await _json(await agent.get("/json/list", headers=headers))
    assert all("browser-7.viper.internal:8080" in t["webSocketDebuggerUrl"] for t in listed)


async def test_devtools_socket_closes_when_chromium_closes_it(agent: AgentClient) -> None:
    created = await _json(await agent.post("/v1/targets", json={}), 201)
    async with agent.ws_connect(f"/devtools/page/{created['id']}") as ws:
        await ws.send_json({"id": 7, "method": "Runtime.evaluate", "params": {"expression": "1"}})
        assert (await ws.receive_json(timeout=10))["id"] == 7
        resp = await agent.delete(f"/v1/targets/{created['id']}")
        assert resp.status == 204
        frames = []
        async with asyncio.timeout(10):
            while (msg := await ws.receive()).type is aiohttp.WSMsgType.TEXT:
                frames.append(json.loads(msg.data))
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert any(f.get("method") == "Inspector.detached" for f in frames)
        assert ws.close_code is not None
        assert 1000 <= ws.close_code < 5000


async def test_unknown_route_and_method_are_json_errors(agent: AgentClient) -> None:
    _error(await _json(await agent.get("/v1/nope"), 404), "not_found")
    _error(await _json(await agent.delete("/v1/health"), 405), "method_not_allowed")


# --- request validation ------------------------------------------------------------------------


async def test_bad_json_wrong_type_and_unknown_fields(agent: AgentClient) -> None:
    resp = await agent.post(
        "/v1/navigation", data="{nope", headers={"Content-Type": "application/json"}
    )
    _error(await _json(resp, 400), "bad_request")
    resp = await agent.post("/v1/navigation", data="url=x", headers={"Content-Type": "text/plain"})
    _error(await _json(resp, 415), "unsupported_media_type")
    resp = await agent.post("/v1/navigation", json={"url": "http://x/", "colour": "red"})
    err = _error(await _json(resp, 422), "validation_failed")
    assert any("colour" in line for line in err["details"]["errors"])
    resp = await agent.post("/v1/navigation", json={"url": "javascript:alert(1)"})
    err = _error(await _json(resp, 422), "validation_failed")
    assert any("$.url" in line for line in err["details"]["errors"])
    resp = await agent.post("/v1/navigation", json={"url": "http://x/", "timeout_ms": "5"})
    err = _error(await _json(resp, 422), "validation_failed")
    assert err["details"]["errors"] == ["expected int, got string @ $.timeout_ms"]
    resp = await agent.get("/v1/screenshot", params={"format": "gif"})
    _error(await _json(resp, 422), "validation_failed")
    resp = await agent.get("/v1/screenshot", params={"quality": "50"})
    err = _error(await _json(resp, 422), "validation_failed")
    assert err["details"]["errors"] == ["applies to jpeg only @ $.quality"]


# --- navigation --------------------------------------------------------------------------------


async def test_navigate_reports_url_title_and_status(agent: AgentClient, site: Site) -> None:
    body = await go(agent, site.url("/"))
    assert body["url"] == site.url("/")
    assert body["title"] == "Index"
    assert body["status"] == 200
    assert body["target"]
    missing = await go(agent, site.url("/missing"), wait_until="domcontentloaded")
    assert missing["status"] == 404
    assert missing["title"] == "Missing"
    idle = await go(agent, site.url("/second"), wait_until="networkidle")
    assert idle["title"] == "Second"


async def test_navigate_failure_and_timeout(agent: AgentClient, site: Site) -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    resp = await agent.post("/v1/navigation", json={"url": f"http://127.0.0.1:{closed_port}/"})
    err = _error(await _json(resp, 502), "navigation_failed")
    assert "ERR_CONNECTION_REFUSED" in err["details"]["error"]
    resp = await agent.post("/v1/navigation", json={"url": site.url("/slow"), "timeout_ms": 300})
    err = _error(await _json(resp, 504), "timeout")
    assert err["details"]["timeout_ms"] == 300


async def test_history_back_forward_reload_and_state(agent: AgentClient, site: Site) -> None:
    await go(agent, site.url("/"))
    await go(agent, site.url("/second"))
    back = await _json(await agent.post("/v1/navigation/back"))
    assert back["url"] == site.url("/")
    state = await _json(await agent.get("/v1/navigation"))
    assert state["can_go_forward"] is True
    assert state["title"] == "Index"
    fwd = await _json(await agent.post("/v1/navigation/forward", json={}))
    assert fwd["url"] == site.url("/second")
    _error(await _json(await agent.post("/v1/navigation/forward"), 409), "invalid_state")
    reloaded = await _json(await agent.post("/v1/navigation/reload", json={"ignore_cache": True}))
    assert reloaded["title"] == "Second"
    assert reloaded["status"] == 200


async def test_wait_for_the_next_navigation(agent: AgentClient, site: Site) -> None:
    await go(agent, site.url("/"))
    waiter = asyncio.ensure_future(agent.post("/v1/navigation/wait", json={"timeout_ms": 5000}))
    await asyncio.sleep(0.2)
    await _json(await agent.post("/v1/dom/click", json={"selector": "#go"}))
    body = await _json(await waiter)
    assert body["url"] == site.url("/second")
    resp = await agent.post("/v1/navigation/wait", json={"timeout_ms": 200})
    _error(await _json(resp, 504), "timeout")


async def test_viewport_and_user_agent(agent: AgentClient, site: Site) -> None:
    await go(agent, site.url("/"))
    body = await _json(
        await agent.post(
            "/v1/navigation/viewport", json={"width": 500, "height": 400, "mobile": False}
        )
    )
    assert body["width"] == 500
    assert body["target"]
    width = await _json(
        await agent.post("/v1/script/evaluate", json={"expression": "window.innerWidth"})
    )
    assert width["value"] == 500
    await _json(
        await agent.post(
            "/v1/navigation/user-agent",
            json={"user_agent": "ViperTest/1.0", "accept_language": "de-DE"},
        )
    )
    ua = await _json(
        await agent.post("/v1/script/evaluate", json={"expression": "navigator.userAgent"})
    )
    assert ua["value"] == "ViperTest/1.0"
    resp = await agent.post("/v1/navigation/viewport", json={"width": 0, "height": 10})
    err = _error(await _json(resp, 422), "validation_failed")
    assert err["details"]["errors"] == ["must be between 1 and 16384 @ $.width"]
    await agent.post("/v1/navigation/viewport", json={"width": 1280, "height": 800})


# --- DOM ---------------------------------------------------------------------------------------


async def test_dom_reads_html_text_attribute_and_all(agent: AgentClient, site: Site) -> None:
    await go(agent, site.url("/"))
    html = await _json(await agent.get("/v1/dom", params={"selector": "#heading"}))
    assert html["value"].startswith("<h1")
    assert html["count"] == 1
    text = await _json(await agent.get("/v1/dom", params={"selector": "h1", "format": "text"}))
    assert text["value"] == "Hello Viper"
    attr = await _json(
        await agent.get(
            "/v1/dom", params={"selector": "h1", "format": "attribute", "name": "class"}
        )
    )
    assert attr["value"] == "big"
    every = await _json(
        await agent.get("/v1/dom", params={"selector": ".item", "format": "text", "all": "true"})
    )
    assert every["count"] == 3
    assert every["values"] == ["one", "two", "three"]
    none = await _json(await agent.get("/v1/dom", params={"selector": ".zzz", "all": "true"}))
    assert none["count"] == 0
    assert none["values"] == []


async def test_dom_read_errors(agent: AgentClient, site: Site) -> None:
    await go(agent, site.url("/"))
    _error(
        await _json(await agent.get("/v1/dom", params={"selector": "#nope"}), 404),
        "element_not_found",
    )
    err = _error(
        await _json(await agent.get("/v1/dom", params={"selector": "##"}), 422), "validation_failed"
    )
    assert err["details"]["errors"] == ["not a valid CSS selector @ $.selector"]
    err = _error(
        await _json(
            await agent.get("/v1/dom", params={"selector": "h1", "format": "attribute"}), 422
        ),
        "validation_failed",
    )
    assert err["details"]["errors"] == ["is required when format is attribute @ $.name"]
    _error(await _json(await agent.get("/v1/dom"), 422), "validation_failed")


async def test_click_type_and_wait(agent: AgentClient, site: Site) -> None:
    await go(agent, site.url("/"))
    done = await _json(await agent.post("/v1/dom/click", json={"selector": "#btn"}))
    assert done["selector"] == "#btn"
    assert done["elapsed_ms"] >= 0
    await _json(await agent.post("/v1/dom/click", json={"selector": "#btn", "click_count": 2}))
    out = await _json(await agent.get("/v1/dom", params={"selector": "#out", "format": "text"}))
    assert out["value"] == "clicked 3"
    await _json(await agent.post("/v1/dom/type", json={"selector": "#name", "text": "hello"}))
    await _json(
        await agent.post("/v1/dom/type", json={"selector": "#name", "text": "viper", "clear": True})
    )
    value = await _json(
        await agent.post(
            "/v1/script/evaluate", json={"expression": "document.querySelector('#name').value"}
        )
    )
    assert value["value"] == "viper"
    long_text = "x" * 1000 + "\nend"
    await _json(await agent.post("/v1/dom/type", json={"selector": "#notes", "text": long_text}))
    notes = await _json(
        await agent.post(
            "/v1/script/evaluate", json={"expression": "document.querySelector('#notes').value"}
        )
    )
    assert notes["value"] == long_text
    await _json(await agent.post("/v1/dom/click", json={"selector": "#later"}))
    await _json(await agent.post("/v1/dom/wait", json={"selector": "#appeared"}))
    await _json(await agent.post("/v1/dom/wait", json={"selector": "#hidden", "state": "hidden"}))
    await _json(await agent.post("/v1/dom/wait", json={"selector": "#nah", "state": "detached"}))


async def test_dom_action_errors(agent: AgentClient, site: Site) -> None:
    await go(agent, site.url("/"))
    resp = await agent.post("/v1/dom/click", json={"selector": "#nope", "timeout_ms": 200})
    err = _error(await _json(resp, 404), "element_not_found")
    assert err["details"]["selector"] == "#nope"
    resp = await agent.post("/v1/dom/click", json={"selector": "#hidden", "timeout_ms": 200})
    _error(await _json(resp, 504), "timeout")
    resp = await agent.post(
        "/v1/dom/wait", json={"selector": "h1", "state": "detached", "timeout_ms": 200}
    )
    _error(await _json(resp, 504), "timeout")
    resp = await agent.post("/v1/dom/type", json={"selector": "#name"})
    err = _error(await _json(resp, 422), "validation_failed")
    assert err["details"]["errors"] == ["required field missing @ $.text"]
    resp = await agent.post("/v1/dom/click", json={"selector": "#btn", "button": "thumb"})
    _error(await _json(resp, 422), "validation_failed")


# --- script ------------------------------------------------------------------------------------


async def test_evaluate_values_and_promises(agent: AgentClient, site: Site) -> None:
    await go(agent, site.url("/"))
    cases = [
        ("1 + 2", 3, "number"),
        ("({a: [1, 'x', null]})", {"a": [1, "x", None]}, "object"),
        ("undefined", None, "undefined"),
        ("NaN", "NaN", "number"),
        ("document.title", "Index", "string"),
    ]
    for expression, value, kind in cases:
        body = await _json(await agent.post("/v1/script/evaluate", json={"expression": expression}))
        assert (body["value"], body["type"]) == (value, kind), expression
    body = await _json(
        await agent.post(
            "/v1/script/evaluate",
            json={
                "expression": "new Promise(r => setTimeout(() => r('late'), 50))",
                "await_promise": True,
            },
        )
    )
    assert body["value"] == "late"


async def test_evaluate_errors(agent: AgentClient, site: Site) -> None:
    await go(agent, site.url("/"))
    resp = await agent.post("/v1/script/evaluate", json={"expression": "throw new Error('bad')"})
    err = _error(await _json(resp, 422), "script_error")
    assert "bad" in err["details"]["exception"]
    resp = await agent.post(
        "/v1/script/evaluate",
        json={"expression": "Promise.reject(new TypeError('nope'))", "await_promise": True},
    )
    err = _error(await _json(resp, 422), "script_error")
    assert "TypeError" in err["message"]
    resp = await agent.post("/v1/script/evaluate", json={"expression": "syntax error here"})
    _error(await _json(resp, 422), "script_error")
    resp = await agent.post(
        "/v1/script/evaluate", json={"expression": "while (true) {}", "timeout_ms": 300}
    )
    _error(await _json(resp, 504), "timeout")
    # The endless loop was terminated: the tab answers again.
    body = await _json(await agent.post("/v1/script/evaluate", json={"expression": "40 + 2"}))
    assert body["value"] == 42
    _error(
        await _json(await agent.post("/v1/script/evaluate", json={"expression": ""}), 422),
        "validation_failed",
    )


# --- screenshots -------------------------------------------------------------------------------


async def test_screenshots_in_the_format_asked(agent: AgentClient, site: Site) -> None:
    await go(agent, site.url("/noisy?w=300&h=3000"))
    png = await agent.get("/v1/screenshot")
    assert png.status == 200
    assert png.content_type == "image/png"
    data = await png.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    viewport_height = int.from_bytes(data[20:24], "big")
    jpeg = await agent.get("/v1/screenshot", params={"format": "jpeg", "quality": "40"})
    assert jpeg.content_type == "image/jpeg"
    assert (await jpeg.read())[:3] == b"\xff\xd8\xff"
    full = await agent.get("/v1/screenshot", params={"full_page": "true"})
    full_data = await full.read()
    assert full_data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(full_data[20:24], "big") >= 3000 > viewport_height


# --- tabs --------------------------------------------------------------------------------------


async def test_tabs_open_target_and_close(agent: AgentClient, site: Site) -> None:
    created = await _json(await agent.post("/v1/targets", json={"url": site.url("/second")}), 201)
    tid = created["id"]
    listed = await _json(await agent.get("/v1/targets"))
    assert tid in [t["id"] for t in listed["targets"]]
    assert listed["targets"][0]["id"] != tid  # the first tab stays the default
    await go(agent, site.url("/"), target=tid)
    title = await _json(
        await agent.post(
            "/v1/script/evaluate", json={"expression": "document.title", "target": tid}
        )
    )
    assert title["value"] == "Index"
    state = await _json(await agent.get("/v1/navigation", params={"target": tid}))
    assert state["target"] == tid
    resp = await agent.delete(f"/v1/targets/{tid}")
    assert resp.status == 204
    _error(await _json(await agent.delete(f"/v1/targets/{tid}"), 404), "not_found")
    resp = await agent.post("/v1/script/evaluate", json={"expression": "1", "target": tid})
    _error(await _json(resp, 404), "not_found")
    _error(await _json(await agent.post("/v1/targets", json={"url": ""}), 422), "validation_failed")


# --- logs --------------------------------------------------------------------------------------


async def _read_events(resp: Any, want: int, timeout: float = 10) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async with asyncio.timeout(timeout):
        while len(events) < want:
            line = (await resp.content.readline()).decode().rstrip("\n")
            if line.startswith("data:"):
                current["data"] = json.loads(line[5:].strip())
            elif line.startswith("event:"):
                current["event"] = line[6:].strip()
            elif line.startswith("id:"):
                current["id"] = line[3:].strip()
            elif line == "" and current:
                events.append(current)
                current = {}
    return events


async def test_log_stream_replays_and_follows(agent: AgentClient, site: Site) -> None:
    await go(agent, site.url("/console"))
    await asyncio.sleep(0.3)
    resp = await agent.get("/v1/logs/stream", params={"source": "console,page_error,network"})
    assert resp.status == 200
    assert resp.content_type == "text/event-stream"
    seen: list[dict[str, Any]] = []
    for _ in range(200):
        seen += await _read_events(resp, 1)
        kinds = {(e["event"], e["data"]["message"].split(" ")[0]) for e in seen}
        if {("console", "hello"), ("page_error", "Error:"), ("network", "GET")} <= kinds:
            break
    messages = [e["data"]["message"] for e in seen]
    assert "hello from the page 42" in messages
    assert any("boom in page" in m for m in messages)
    assert any(m == f"GET {site.url('/console')}" for m in messages)
    assert all(int(e["id"]) == e["data"]["seq"] for e in seen)
    last = seen[-1]["data"]["seq"]
    resp.close()
    # A subscriber resuming after the last seen entry gets only newer ones, live.
    resp = await agent.get("/v1/logs/stream", headers={"Last-Event-ID": str(last)})
    await agent.post("/v1/script/evaluate", json={"expression": "console.error('live one')"})
    live = await _read_events(resp, 1)
    assert live[0]["data"]["seq"] > last
    resp.close()
    # The agent's own lines and Chromium's output are in the history too.
    resp = await agent.get("/v1/logs/stream", params={"source": "agent,browser"})
    sources: set[str] = set()
    while sources != {"agent", "browser"}:
        sources |= {e["event"] for e in await _read_events(resp, 1, timeout=5)}
    resp.close()
    bad = await agent.get("/v1/logs/stream", params={"source": "telepathy"})
    _error(await _json(bad, 422), "validation_failed")
