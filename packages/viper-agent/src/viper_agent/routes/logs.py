"""GET /v1/logs/stream: server-sent log entries, recent history first.

Each event's `event:` is the entry's source, `id:` its sequence number and `data:` the JSON
`LogEntry`. A client resuming with `Last-Event-ID` (or `?after=SEQ`) gets only newer entries;
`?source=console,network` filters by source.
"""

from __future__ import annotations

import json

from aiohttp import web
from aiohttp_sse import sse_response

from viper_agent.keys import hub_key, streams_key
from viper_protocol.converter import converter
from viper_protocol.errors import ValidationFailed
from viper_protocol.models.browser import LogSource

routes = web.RouteTableDef()


def _after(request: web.Request) -> int:
    raw = request.query.get("after") or request.headers.get("Last-Event-ID") or "0"
    if not raw.isdigit():
        raise ValidationFailed(
            "after must be a sequence number", {"errors": ["expected a non-negative int @ $.after"]}
        )
    return int(raw)


def _sources(request: web.Request) -> set[LogSource] | None:
    raw = request.query.get("source")
    if not raw:
        return None
    allowed = {s.value for s in LogSource}
    wanted = {s.strip() for s in raw.split(",") if s.strip()}
    bad = sorted(wanted - allowed)
    if bad:
        raise ValidationFailed(
            "unknown log source",
            {"errors": [f"expected one of {', '.join(sorted(allowed))} @ $.source"]},
        )
    return {LogSource(s) for s in wanted}


@routes.get("/v1/logs/stream")
async def stream(request: web.Request) -> web.StreamResponse:
    """Replay recent entries, then follow new ones until the client or the agent leaves."""
    after, sources = _after(request), _sources(request)
    hub = request.app[hub_key]
    async with sse_response(request, sep="\n", ping_interval=15) as resp:
        request.app[streams_key].add(resp)
        with hub.subscribe(after) as sub:
            async for entry in sub:
                if sources is not None and entry.source not in sources:
                    continue
                data = json.dumps(converter.unstructure(entry), separators=(",", ":"))
                await resp.send(data, id=str(entry.seq), event=entry.source.value)
    return resp
