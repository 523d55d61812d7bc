"""Readiness and health of a VM's browser, as seen through its agent.

`await_ready` polls `/v1/health` after launch until Chromium runs, records the DevTools
metadata and marks the VM running (a deadline or a broken agent crashes it instead).
`monitor` keeps polling a running VM: a Chromium that crashed crashes the VM (the browser
the user held, its pages, cookies and DevTools sessions, is gone even though the agent starts
a fresh one), and so does an agent that stays unreachable for `browser_down_timeout`
seconds. Both are bottom halves: they log and publish their own errors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from viper_protocol.converter import converter
from viper_protocol.errors import AgentTimeout, AgentUnavailable
from viper_protocol.models.browser import BrowserStatus
from viper_protocol.models.common import JSONObject
from viper_protocol.models.events import EventType
from viper_protocol.models.vms import VMStatus
from viper_server.orchestrator.state import VMHandle
from viper_server.store import utcnow

if TYPE_CHECKING:
    from viper_server.orchestrator.engine import Engine

logger = logging.getLogger(__name__)

HEALTH_POLL_INTERVAL = 0.2
HEALTH_CALL_TIMEOUT = 2.0


async def await_ready(engine: Engine, handle: VMHandle) -> None:
    """Bottom half: poll the agent until Chromium runs, then mark the VM running.

    A deadline or a broken agent crashes the VM (which `create_vm(wait=True)` reports).
    """
    proc = handle.proc
    assert proc is not None
    deadline = engine.config.ready_timeout(handle.runtime)
    try:
        async with asyncio.timeout(deadline):
            while True:
                try:
                    health = await engine.agent.health(proc.agent_url, timeout=HEALTH_CALL_TIMEOUT)
                except (AgentUnavailable, AgentTimeout):
                    pass
                else:
                    if health.browser.status is BrowserStatus.RUNNING:
                        break
                await asyncio.sleep(HEALTH_POLL_INTERVAL)
        devtools = await engine.agent.devtools(proc.agent_url)
    except TimeoutError:
        await engine._crash(handle, f"the browser was not ready within {deadline:g}s")
        return
    except (AgentUnavailable, AgentTimeout) as exc:
        await engine._crash(handle, f"the agent failed while starting: {exc.message}")
        return
    meta: JSONObject = converter.unstructure(devtools)
    async with handle.lock:
        if handle.closing:
            return
        record = await engine._transition(
            handle, VMStatus.RUNNING, "browser ready", devtools=meta, started_at=utcnow()
        )
    handle.touch()
    engine.metrics.start_seconds.observe(time.monotonic() - handle.created_monotonic)
    handle.log.info("running (%s)", record.agent_url)
    start_monitor(engine, handle, restarts=0)
    if not handle.ready.done():
        handle.ready.set_result(None)


def start_monitor(engine: Engine, handle: VMHandle, *, restarts: int | None = None) -> None:
    """Start watching a running VM's browser through its agent's health endpoint.

    `restarts` is the browser restart count known so far (None: take the first answer).
    """
    handle.monitor = asyncio.create_task(
        monitor(engine, handle, restarts), name=f"vm-health:{handle.id}"
    )


async def monitor(engine: Engine, handle: VMHandle, restarts: int | None) -> None:
    """Bottom half: a crashed Chromium, or an agent unreachable for good, crashes the VM."""
    proc = handle.proc
    assert proc is not None
    config = engine.config
    down_since: float | None = None
    while True:
        await asyncio.sleep(config.health_interval)
        try:
            health = await engine.agent.health(proc.agent_url, timeout=HEALTH_CALL_TIMEOUT)
        except (AgentUnavailable, AgentTimeout) as exc:
            state = f"agent unreachable: {exc.message}"
            up = False
        else:
            browser = health.browser
            state = f"browser {browser.status}"
            up = browser.status is BrowserStatus.RUNNING
            crashed = browser.status in (BrowserStatus.CRASHED, BrowserStatus.RESTARTING)
            if crashed or (restarts is not None and browser.restarts > restarts):
                code = browser.last_exit_code
                exit_note = f" (exit code {code})" if code is not None else ""
                line = f"Chromium crashed{exit_note}: the browser session is lost"
                handle.log.warning("%s", line)
                await log_event(engine, handle, line, restarts=browser.restarts)
                await engine._crash(handle, line)
                return
            restarts = browser.restarts
        if up:
            down_since = None
            continue
        now = time.monotonic()
        down_since = down_since if down_since is not None else now
        if now - down_since >= config.browser_down_timeout:
            await engine._crash(handle, f"{state} for {now - down_since:.0f}s")
            return


async def log_event(engine: Engine, handle: VMHandle, line: str, **data: int | str) -> None:
    """Publish (and store) a `VM_LOG` event for the VM."""
    record = await engine.store.get_vm(handle.id)
    assert record is not None
    payload: JSONObject = {"stream": "server", "line": line, **data}
    await engine._emit(EventType.VM_LOG, record, line, payload)
