"""A client for Cloud Hypervisor's REST API on its unix socket (`--api-socket path=...`).

Cloud Hypervisor serves HTTP/1.1 on the socket under `/api/v1/`: `GET vmm.ping` (VMM version),
`GET vm.info` (config and `state`), `PUT vm.power-button` (ACPI power button: the guest shuts
down by itself), `PUT vm.shutdown` (stop the VM at once), `PUT vmm.shutdown` (the VMM exits).
Actions answer `204 No Content`; failures answer 4xx/5xx with a plain-text body. One aiohttp
session over a `UnixConnector` per VM; every call has a deadline.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import aiohttp

logger = logging.getLogger(__name__)

# The host part is ignored on a unix socket; Cloud Hypervisor's own tools use `localhost`.
BASE = "http://localhost/api/v1"


class CHAPIError(Exception):
    """Cloud Hypervisor refused or failed a request (or the socket is gone)."""

    def __init__(self, endpoint: str, status: int | None, body: str) -> None:
        super().__init__(f"{endpoint}: {status if status is not None else 'no answer'} {body}")
        self.endpoint = endpoint
        self.status = status
        self.body = body


class CloudHypervisorAPI:
    """Calls on one VMM's API socket. Use as an async context manager or call `close`."""

    def __init__(self, socket_path: Path, *, timeout: float = 5.0) -> None:
        self.socket_path = socket_path
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> CloudHypervisorAPI:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(self.socket_path)),
                timeout=self._timeout,
            )
        return self._session

    async def _call(self, method: str, endpoint: str, body: Any = None) -> Any:
        """One request; the decoded JSON answer, or None for an empty one.

        Raises:
            CHAPIError: an error status, or the socket does not answer.
        """
        try:
            async with self._client().request(method, f"{BASE}/{endpoint}", json=body) as response:
                text = await response.text()
                if response.status >= 400:
                    raise CHAPIError(endpoint, response.status, text.strip())
                if not text:
                    return None
                if response.content_type == "application/json":
                    return await response.json(content_type=None)
                return text
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise CHAPIError(endpoint, None, str(exc) or type(exc).__name__) from exc

    async def ping(self) -> dict[str, Any]:
        """`GET vmm.ping`: the VMM's build and version (also proves the socket answers)."""
        result = await self._call("GET", "vmm.ping")
        return result if isinstance(result, dict) else {}

    async def info(self) -> dict[str, Any]:
        """`GET vm.info`: the VM's config, `state` (`Created`, `Running`, `Shutdown`, `Paused`)."""
        result = await self._call("GET", "vm.info")
        return result if isinstance(result, dict) else {}

    async def power_button(self) -> None:
        """`PUT vm.power-button`: press the ACPI power button (graceful, guest-driven)."""
        await self._call("PUT", "vm.power-button")

    async def shutdown_vm(self) -> None:
        """`PUT vm.shutdown`: stop the VM now (no guest involvement)."""
        await self._call("PUT", "vm.shutdown")

    async def shutdown_vmm(self) -> None:
        """`PUT vmm.shutdown`: make the VMM process exit."""
        await self._call("PUT", "vmm.shutdown")

    async def close(self) -> None:
        """Close the HTTP session (idempotent)."""
        if self._session is not None:
            await self._session.close()
            self._session = None
