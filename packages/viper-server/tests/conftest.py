"""Fixtures for the domain tests: a config in tmp_path, an engine, and test doubles.

The doubles are for orchestration tests only (state sequences, concurrency, rollback): a
runtime that "needs network" but runs `sleep`, a network manager that only records taps (it
never touches the host), and a tiny stand-in agent answering /v1/health and /v1/devtools.
The real path (process runtime, real agent, real Chromium) is in test_process_runtime.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import attrs
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from viper_protocol.errors import LaunchFailed
from viper_protocol.models.vms import RuntimeName
from viper_server.config import ServerConfig
from viper_server.hypervisors.base import AdoptSpec, LaunchSpec, VMProcess
from viper_server.hypervisors.hostproc import HostProcess, pid_alive, pid_cmdline, spawn
from viper_server.hypervisors.process import AgentProcess
from viper_server.orchestrator import Engine

SLEEP = shutil.which("sleep") or "/bin/sleep"


def agent_available() -> bool:
    """True when the real `viper-agent` command and Chromium are installed."""
    beside = Path(sys.executable).parent / "viper-agent"
    return (beside.exists() or shutil.which("viper-agent") is not None) and (
        shutil.which("chromium") is not None
    )


needs_agent = pytest.mark.skipif(not agent_available(), reason="viper-agent or chromium missing")


class FakeNetwork:
    """A `NetworkManager` that records taps in memory (never touches host networking)."""

    def __init__(self, subnet: IPv4Network) -> None:
        self.taps: set[str] = set()
        self.created: list[str] = []
        self.bridge_calls = 0
        self._subnet = subnet
        self.fail_create = False

    @property
    def network(self) -> IPv4Network:
        return self._subnet

    @property
    def gateway(self) -> IPv4Address:
        return next(self._subnet.hosts())

    async def ensure_bridge(self) -> None:
        self.bridge_calls += 1

    async def create_tap(self, name: str) -> None:
        if self.fail_create:
            raise OSError("tap creation refused (test)")
        self.taps.add(name)
        self.created.append(name)

    async def delete_tap(self, name: str) -> None:
        self.taps.discard(name)

    async def list_taps(self) -> list[str]:
        return sorted(self.taps)

    async def teardown(self) -> None:
        self.taps.clear()


@attrs.define
class SleepRuntime:
    """A runtime double: `needs_network`, runs `sleep`, points at a stand-in agent URL."""

    agent_url: str
    runtime_name: RuntimeName = RuntimeName.QEMU
    fail_launch: bool = False
    launch_delay: float = 0.0
    launched: list[LaunchSpec] = attrs.field(factory=list)
    pids: list[int] = attrs.field(factory=list)

    @property
    def name(self) -> RuntimeName:
        return self.runtime_name

    @property
    def isolated(self) -> bool:
        return True

    @property
    def needs_network(self) -> bool:
        return True

    def availability(self) -> tuple[bool, str | None]:
        return True, None

    async def launch(self, spec: LaunchSpec) -> VMProcess:
        if self.fail_launch:
            raise LaunchFailed("launch refused (test)", command=[SLEEP])
        await asyncio.sleep(self.launch_delay)
        assert spec.ip is not None
        assert spec.tap is not None
        self.launched.append(spec)
        command = [SLEEP, "3600"]
        pid = spawn(command, log_path=spec.log_path)
        self.pids.append(pid)
        proc = HostProcess(pid, child=True, log_path=spec.log_path)
        return AgentProcess(proc, command=command, agent_url=self.agent_url)

    async def adopt(self, spec: AdoptSpec) -> VMProcess | None:
        if not pid_alive(spec.pid) or pid_cmdline(spec.pid) != spec.command:
            return None
        proc = HostProcess(spec.pid, child=False, log_path=spec.log_path)
        return AgentProcess(proc, command=spec.command, agent_url=spec.agent_url)


def health_body(status: str = "running") -> dict[str, object]:
    return {
        "status": "ok" if status == "running" else "degraded",
        "uptime_seconds": 1.0,
        "agent_version": "0.1.0",
        "browser": {"status": status, "pid": 1, "restarts": 0, "version": "Chrome/1"},
    }


DEVTOOLS_BODY = {
    "browser": "Chrome/1.0",
    "protocol_version": "1.3",
    "user_agent": "HeadlessChrome",
    "v8_version": "1",
    "webkit_version": "1",
    "websocket_path": "/devtools/browser/abc",
    "websocket_url": "ws://127.0.0.1:1/devtools/browser/abc",
}


@attrs.define
class StandInAgent:
    """What the stand-in agent answers; tests flip `browser_status`."""

    url: str = ""
    browser_status: str = "running"
    health_calls: int = 0


@pytest.fixture
async def stand_in_agent() -> AsyncIterator[StandInAgent]:
    """A tiny HTTP server answering /v1/health and /v1/devtools like an agent would."""
    state = StandInAgent()

    async def health(_: web.Request) -> web.Response:
        state.health_calls += 1
        return web.json_response(health_body(state.browser_status))

    async def devtools(_: web.Request) -> web.Response:
        return web.json_response(DEVTOOLS_BODY)

    app = web.Application()
    app.router.add_get("/v1/health", health)
    app.router.add_get("/v1/devtools", devtools)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    state.url = str(server.make_url("")).rstrip("/")
    try:
        yield state
    finally:
        await server.close()


@pytest.fixture
def config(tmp_path: Path) -> ServerConfig:
    """A config with its state in tmp_path and short timers."""
    return ServerConfig(
        state_dir=tmp_path / "state",
        port=17777,
        runtime="process",
        reaper_interval=0.2,
        stop_timeout=5.0,
        health_interval=0.3,
        browser_down_timeout=1.5,
        ready_timeouts={RuntimeName.PROCESS: 30.0, RuntimeName.QEMU: 2.0},
    )


@pytest.fixture
def fake_network(config: ServerConfig) -> FakeNetwork:
    return FakeNetwork(config.subnet)


@pytest.fixture
def sleep_runtime(stand_in_agent: StandInAgent) -> Iterator[SleepRuntime]:
    """The runtime double; every `sleep` it started is killed at the end, whatever happened."""
    runtime = SleepRuntime(agent_url=stand_in_agent.url)
    try:
        yield runtime
    finally:
        for pid in runtime.pids:
            kill_quietly(pid)


@pytest.fixture
async def double_engine(
    config: ServerConfig, sleep_runtime: SleepRuntime, fake_network: FakeNetwork
) -> AsyncIterator[Engine]:
    """An engine whose only runtime is the `sleep` double (default runtime: it)."""
    cfg = attrs.evolve(config, runtime="qemu", stop_vms_on_exit=True)
    engine = Engine(cfg, hypervisors={RuntimeName.QEMU: sleep_runtime}, network=fake_network)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()


def kill_quietly(pid: int) -> None:
    """SIGKILL a process group we started, ignoring it being gone."""
    for kill in (os.killpg, os.kill):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(pid, signal.SIGKILL)


async def wait_until(predicate: object, timeout: float = 10.0, interval: float = 0.05) -> None:
    """Poll a sync predicate until it holds."""
    assert callable(predicate)
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(interval)
