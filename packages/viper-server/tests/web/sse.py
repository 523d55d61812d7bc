"""A small SSE reader for the tests: parses `id:`, `event:` and `data:` fields by the spec."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import attrs


@attrs.frozen
class SSEMessage:
    """One dispatched message."""

    id: str | None
    event: str | None
    data: str

    def json(self) -> Any:
        """`data` decoded as JSON."""
        return json.loads(self.data)


async def read_sse(response: aiohttp.ClientResponse) -> AsyncIterator[SSEMessage]:
    """Messages of an event stream until it ends (comments and pings skipped)."""
    fields: dict[str, list[str]] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        assert not line.endswith("\r"), "lines must end in \\n, not CRLF"
        if not line:
            if "data" in fields:
                yield SSEMessage(
                    id=fields.get("id", [None])[-1],
                    event=fields.get("event", [None])[-1],
                    data="\n".join(fields["data"]),
                )
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)
