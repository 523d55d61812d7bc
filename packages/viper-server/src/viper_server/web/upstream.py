"""Reaching a VM's agent from a request: its base URL, and one call with errors mapped.

Shared by the agent passthrough (`routes/agent_proxy.py`) and the DevTools proxy
(`routes/cdp.py`). Every call records activity (`engine.touch`) for the idle timeout; a
connection failure is `AgentUnavailable` (502), a timeout `AgentTimeout` (504), and an answer
of the agent, error or not, is the caller's to relay unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web

from viper_protocol.errors import AgentTimeout, AgentUnavailable
from viper_server.keys import engine_key, proxy_session_key

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
DEFAULT_TIMEOUT = 60.0
TIMEOUT_MARGIN = 10.0


async def agent_base(request: web.Request) -> str:
    """The agent base URL of the VM named in the route, after recording activity on it.

    Raises:
        NotFound: no such VM.
        InvalidState: the VM is not running.
    """
    engine = request.app[engine_key]
    name = request.match_info["name"]
    base = await engine.agent_url(name)
    engine.touch(name)
    return base.rstrip("/")


def deadline_for(timeout_ms: object) -> float:
    """Seconds to wait for the agent: the action's own `timeout_ms` plus a margin."""
    if isinstance(timeout_ms, int) and not isinstance(timeout_ms, bool) and timeout_ms > 0:
        return timeout_ms / 1000 + TIMEOUT_MARGIN
    return DEFAULT_TIMEOUT


@asynccontextmanager
async def agent_call(
    request: web.Request,
    method: str,
    url: str,
    *,
    timeout: float | None,
    data: bytes | None = None,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> AsyncIterator[aiohttp.ClientResponse]:
    """One request to an agent; yields the response with its body still unread.

    `timeout` bounds the whole exchange (None: only connecting is bounded, for streams).

    Raises:
        AgentUnavailable: the agent could not be reached or dropped the connection.
        AgentTimeout: the agent did not answer within `timeout`.
    """
    session = request.app[proxy_session_key]
    client_timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=CONNECT_TIMEOUT)
    name = request.match_info.get("name", "?")
    try:
        async with session.request(
            method,
            url,
            data=data,
            params=params,
            headers=headers,
            timeout=client_timeout,
            allow_redirects=False,
        ) as response:
            yield response
    except TimeoutError:
        raise AgentTimeout(
            f"the agent of VM {name!r} did not answer within {timeout:.0f} s",
            {"vm": name, "timeout_seconds": timeout},
        ) from None
    except aiohttp.ClientError as exc:
        # Only client-side errors: a write to our own caller failing (ConnectionResetError)
        # is not the agent's fault and propagates as is.
        raise AgentUnavailable(
            f"the agent of VM {name!r} is unreachable: {str(exc) or type(exc).__name__}",
            {"vm": name},
        ) from None
