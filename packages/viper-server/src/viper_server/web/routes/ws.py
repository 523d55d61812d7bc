"""Lifecycle events over a WebSocket: `WS /ws/v1/events`.

One text frame per event, the same JSON as the SSE stream's `data:`; the same filters
(`?types=`, `?vm=`) and `?after=<id>` to replay stored events first. Messages from the
client are ignored; the server closes with 1001 when it shuts down.
"""

from __future__ import annotations

import asyncio

from aiohttp import WSMsgType, web

from viper_server.web.openapi import operation
from viper_server.web.routes.events import (
    EventsQuery,
    event_json,
    event_stream,
    next_event,
    parse_filters,
)
from viper_server.web.streams import cancel_and_wait, race_stop

routes = web.RouteTableDef()


async def _drain(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) client messages until the client closes; answers pings."""
    async for msg in ws:
        if msg.type is WSMsgType.ERROR:
            break


@routes.get("/ws/v1/events")
@operation(
    summary="Lifecycle events over a WebSocket (one JSON text frame per event)",
    tag="events",
    query=EventsQuery,
    websocket=True,
    errors=(400, 403, 422),
)
async def events_ws(request: web.Request) -> web.StreamResponse:
    """Send lifecycle events to a WebSocket until either side ends."""
    types, vm, after = parse_filters(request)
    ws = web.WebSocketResponse(heartbeat=30.0)
    async with event_stream(request, types, vm, after) as (sub, stop):
        await ws.prepare(request)
        reader = asyncio.create_task(_drain(ws), name="ws-events-reader")
        reader.add_done_callback(lambda _: stop.set())
        try:
            while (event := await race_stop(next_event(sub), stop)) is not None:
                await ws.send_str(event_json(event))
        except ConnectionResetError:
            pass
        finally:
            await cancel_and_wait(reader)
            await ws.close(code=1001)
    return ws
