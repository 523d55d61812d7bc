"""The server's HTTP client for the agents inside VMs: the one `ClientSession` of the domain.

The engine uses it to wait for readiness (`/v1/health`) and to record DevTools metadata
(`/v1/devtools`). Every call runs under `asyncio.timeout`; transport failures become
`AgentUnavailable`, deadlines `AgentTimeout`, so callers handle exactly two error types.
The web layer may borrow `session` for its passthrough and DevTools proxy routes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TypeVar

import aiohttp

from viper_protocol.converter import converter
from viper_protocol.errors import AgentTimeout, AgentUnavailable
from viper_protocol.models.browser import AgentHealth, DevToolsMetadata

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TIMEOUT = 5.0


class AgentClient:
    """Typed calls to a VM's agent by base URL (`http://192.168.127.2:8080`)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared session (created on first use; closed by `close`)."""
        if self._session is None or self._session.closed:
            # No total timeout on the session: each call sets its own deadline, and proxied
            # WebSockets and SSE streams must be able to live for hours.
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None),
                connector=aiohttp.TCPConnector(limit=0, force_close=False),
            )
        return self._session

    async def close(self) -> None:
        """Close the session (idempotent)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def health(self, base_url: str, *, timeout: float = DEFAULT_TIMEOUT) -> AgentHealth:
        """GET /v1/health.

        Raises:
            AgentUnavailable: the agent could not be reached or answered with an error.
            AgentTimeout: no answer within `timeout` seconds.
        """
        return await self._get_json(base_url, "/v1/health", AgentHealth, timeout)

    async def devtools(
        self, base_url: str, *, timeout: float = DEFAULT_TIMEOUT
    ) -> DevToolsMetadata:
        """GET /v1/devtools.

        Raises:
            AgentUnavailable: the agent could not be reached or answered with an error.
            AgentTimeout: no answer within `timeout` seconds.
        """
        return await self._get_json(base_url, "/v1/devtools", DevToolsMetadata, timeout)

    async def _get_json(self, base_url: str, path: str, cls: type[T], timeout: float) -> T:
        url = base_url.rstrip("/") + path
        try:
            async with asyncio.timeout(timeout), self.session.get(url) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise AgentUnavailable(
                        f"agent answered {resp.status} to GET {path}",
                        {
                            "url": url,
                            "status": resp.status,
                            "body": body[:500].decode(errors="replace"),
                        },
                    )
                return converter.structure(json.loads(body), cls)
        except TimeoutError:
            raise AgentTimeout(
                f"agent did not answer GET {path} within {timeout:g}s", {"url": url}
            ) from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise AgentUnavailable(
                f"agent unreachable at {url}: {str(exc) or type(exc).__name__}", {"url": url}
            ) from exc
        except Exception as exc:  # a cattrs structure error of a malformed answer
            if isinstance(exc, AgentUnavailable):
                raise
            raise AgentUnavailable(
                f"agent gave a malformed answer to GET {path}: {exc}", {"url": url}
            ) from exc
