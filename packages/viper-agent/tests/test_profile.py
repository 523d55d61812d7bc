"""Profile export from one agent, import into a second: the logged-in session survives."""

from __future__ import annotations

from typing import Any

from tests.conftest import AgentClient, Site, start_agent


async def _ok(resp: Any) -> Any:
    body = await resp.json()
    assert resp.status == 200, body
    return body


async def _text(agent: AgentClient, selector: str) -> str:
    body = await _ok(await agent.get("/v1/dom", params={"selector": selector, "format": "text"}))
    return str(body["value"])


async def test_profile_moves_a_logged_in_session(agent: AgentClient, site: Site) -> None:
    await _ok(await agent.post("/v1/navigation", json={"url": site.url("/login")}))
    await _ok(await agent.post("/v1/navigation", json={"url": site.url("/account")}))
    assert await _text(agent, "#who") == "alice"
    profile = await _ok(await agent.get("/v1/profile"))
    sid = next(c for c in profile["cookies"] if c["name"] == "sid")
    assert sid["value"] == "s3cret"
    assert sid["http_only"] is True
    assert sid["expires"] is not None
    assert sid["same_site"] == "Lax"
    (origin,) = [o for o in profile["origins"] if o["origin"] == site.origin]
    assert origin["local_storage"] == {"token": "tok-123"}
    assert origin["session_storage"] == {"tab": "tab-456"}
    assert profile["user_agent"]

    second = await start_agent()
    try:
        await _ok(await second.post("/v1/navigation", json={"url": site.url("/account")}))
        assert await _text(second, "#who") == "anonymous"
        assert await _text(second, "#token") == "none"
        result = await _ok(await second.put("/v1/profile", json=profile))
        assert result == {"cookies": len(profile["cookies"]), "origins": len(profile["origins"])}
        await _ok(await second.post("/v1/navigation", json={"url": site.url("/account")}))
        assert await _text(second, "#who") == "alice"
        assert await _text(second, "#token") == "tok-123"
        assert await _text(second, "#tab") == "tab-456"
        again = await _ok(await second.get("/v1/profile"))
        assert {c["name"] for c in again["cookies"]} >= {"sid", "pref"}
    finally:
        await second.close()


async def test_profile_import_rejects_bad_input(agent: AgentClient) -> None:
    bad = [
        (
            {"cookies": [{"name": "a", "value": "b"}]},
            "required field missing @ $.cookies[0].domain",
        ),
        ({"origins": [{"origin": "ftp://x"}]}, "not an http(s) origin @ $.origins[0].origin"),
        ({"cookies": "all"}, "expected array, got string @ $.cookies"),
        ({"profile": {}}, "unknown field(s): profile @ $"),
    ]
    for body, message in bad:
        resp = await agent.put("/v1/profile", json=body)
        err = await resp.json()
        assert resp.status == 422, err
        assert err["error"]["code"] == "validation_failed"
        assert message in err["error"]["details"]["errors"]
    resp = await agent.put(
        "/v1/profile", json={"cookies": [{"name": "", "value": "x", "domain": ""}]}
    )
    err = await resp.json()
    assert resp.status == 422, err
