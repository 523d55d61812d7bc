"""The CLI's only HTTP client: REST calls to the server, errors mapped back to ViperError."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import aiohttp
import attrs

from viper_protocol.converter import converter
from viper_protocol.errors import AgentUnavailable, ErrorEnvelope, ViperError, error_from_body

T = TypeVar("T")

DEFAULT_API_BASE = "http://127.0.0.1:7777"


@attrs.define
class Client:
    """REST client for one server; use as `async with Client(base, key) as c:`."""

    base_url: str = DEFAULT_API_BASE
    api_key: str | None = None
    timeout: float | None = 300.0
    _session: aiohttp.ClientSession | None = attrs.field(default=None, init=False)

    async def __aenter__(self) -> Client:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._session = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use Client as an async context manager"
        return self._session

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: object = None,
    ) -> bytes:
        """Send a request and return the raw body.

        Raises:
            ViperError: the server answered with an error (mapped from its `code`), or could
                not be reached (`AgentUnavailable` is not used for that: a plain ViperError).
        """
        try:
            async with self.session.request(
                method, self.url(path), params=params, json=body
            ) as resp:
                data = await resp.read()
                if resp.status >= 400:
                    raise _error_from_response(resp.status, data)
                return data
        except aiohttp.ClientConnectionError as exc:
            raise ViperError(f"cannot reach the Viper server at {self.base_url}: {exc}") from exc

    async def get(self, path: str, cls: type[T], params: dict[str, str] | None = None) -> T:
        return converter.structure(json.loads(await self.request("GET", path, params=params)), cls)

    async def send(self, method: str, path: str, body: object, cls: type[T], **kw: Any) -> T:
        raw = converter.unstructure(body) if attrs.has(type(body)) else body
        data = await self.request(method, path, body=raw, **kw)
        return converter.structure(json.loads(data), cls)

    async def sse(
        self, path: str, params: dict[str, str] | None = None
    ) -> AsyncIterator[tuple[str, str, str]]:
        """Yield `(event, id, data)` from a server-sent event stream."""
        try:
            async with self.session.get(
                self.url(path),
                params=params,
                headers={"Accept": "text/event-stream"},
                timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
            ) as resp:
                if resp.status >= 400:
                    raise _error_from_response(resp.status, await resp.read())
                event, event_id = "message", ""
                data_lines: list[str] = []
                async for raw_line in resp.content:
                    line = raw_line.decode().rstrip("\r\n")
                    if not line:
                        if data_lines:
                            yield event, event_id, "\n".join(data_lines)
                        event, data_lines = "message", []
                    elif line.startswith(":"):
                        continue
                    else:
                        field, _, value = line.partition(":")
                        value = value.removeprefix(" ")
                        if field == "event":
                            event = value
                        elif field == "id":
                            event_id = value
                        elif field == "data":
                            data_lines.append(value)
        except aiohttp.ClientConnectionError as exc:
            raise AgentUnavailable(f"event stream from {self.base_url} broke: {exc}") from exc


def _error_from_response(status: int, data: bytes) -> ViperError:
    try:
        envelope = converter.structure(json.loads(data), ErrorEnvelope)
    except Exception:  # not a Viper error body (a proxy in between, say)
        text = data.decode(errors="replace").strip()[:200]
        err = ViperError(f"HTTP {status}: {text}")
        err.http_status = status  # type: ignore[misc]
        return err
    return error_from_body(envelope.error, status)
