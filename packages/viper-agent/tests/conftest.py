"""Fixtures: the test site and agents on real Chromium, shared per module where safe."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.site import make_site
from viper_agent.app import create_app
from viper_agent.config import AgentConfig

AgentClient = TestClient[web.Request, web.Application]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Everything here drives Chromium: give slow CI machines room, but not forever.
    for item in items:
        item.add_marker(pytest.mark.timeout(120))


class Site:
    """The test web site's base URL."""

    def __init__(self, server: TestServer) -> None:
        self.server = server

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def url(self, path: str = "/") -> str:
        return self.origin + path


@pytest.fixture(scope="module")
async def site() -> AsyncIterator[Site]:
    server = TestServer(make_site(), host="127.0.0.1")
    await server.start_server()
    try:
        yield Site(server)
    finally:
        await server.close()


def agent_config() -> AgentConfig:
    return AgentConfig(chromium=CHROMIUM, restart_delay=0.05)


async def start_agent(config: AgentConfig | None = None) -> AgentClient:
    """An agent app on a real TestServer (its cleanup stops Chromium)."""
    server = TestServer(create_app(config or agent_config()), host="127.0.0.1")
    client: AgentClient = TestClient(server)
    await client.start_server()
    return client


@pytest.fixture(scope="module")
async def agent() -> AsyncIterator[AgentClient]:
    client = await start_agent()
    try:
        yield client
    finally:
        await client.close()
