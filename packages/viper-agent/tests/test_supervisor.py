"""Chromium crashing is noticed within a second, reported in health and logs, and restarted."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any

from tests.conftest import AgentClient, Site, start_agent


async def _health(agent: AgentClient) -> Any:
    resp = await agent.get("/v1/health")
    assert resp.status == 200
    return await resp.json()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_killed_chromium_is_reported_and_restarted(site: Site) -> None:
    agent = await start_agent()
    try:
        before = await _health(agent)
        pid = before["browser"]["pid"]
        stream = await agent.get("/v1/logs/stream", params={"source": "browser"})
        assert stream.status == 200
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        # Noticed within a second: health no longer reports the old process as running.
        noticed = None
        while time.monotonic() - killed < 1.0:
            body = await _health(agent)
            if body["browser"]["pid"] != pid:
                noticed = body
                break
            await asyncio.sleep(0.02)
        assert noticed is not None, "the crash was not noticed within 1 s"
        assert noticed["browser"]["restarts"] >= 1 or noticed["browser"]["status"] != "running"
        # Reported in the log stream.
        async with asyncio.timeout(5):
            while True:
                line = (await stream.content.readline()).decode()
                if line.startswith("data:"):
                    entry = json.loads(line[5:])
                    if "exited unexpectedly" in entry["message"]:
                        assert entry["level"] == "error"
                        assert entry["data"]["exit_code"] == -signal.SIGKILL
                        break
        stream.close()
        # Restarted, and usable again.
        async with asyncio.timeout(20):
            while True:
                body = await _health(agent)
                if body["status"] == "ok" and body["browser"]["pid"] not in (None, pid):
                    break
                await asyncio.sleep(0.05)
        assert body["browser"]["restarts"] == 1
        assert body["browser"]["last_exit_code"] == -signal.SIGKILL
        assert not _alive(pid)
        resp = await agent.post("/v1/navigation", json={"url": site.url("/")})
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["title"] == "Index"
    finally:
        await agent.close()


async def test_requests_while_chromium_is_down_get_503() -> None:
    agent = await start_agent()
    try:
        pid = (await _health(agent))["browser"]["pid"]
        os.kill(pid, signal.SIGKILL)
        statuses = set()
        async with asyncio.timeout(20):
            while True:
                resp = await agent.post("/v1/script/evaluate", json={"expression": "1"})
                body = await resp.json()
                statuses.add(resp.status)
                if resp.status == 503:
                    assert body["error"]["code"] == "browser_unavailable"
                if resp.status == 200 and 503 in statuses:
                    break
                await asyncio.sleep(0.01)
        assert statuses <= {200, 503}
    finally:
        await agent.close()
