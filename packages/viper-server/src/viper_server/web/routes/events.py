"""Lifecycle events as Server-Sent Events: `GET /api/v1/events`.

`event:` is the event type, `id:` its store sequence number and `data:` the event as JSON
(with `type`). A client reconnecting with `Last-Event-ID` (or `?after=`) first gets every
stored event after that id, then live ones, none twice. Lines end in "\\n", not aiohttp-sse's
default CRLF, which some SSE clients (AG-UI's among them) do not split on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import cast

import attrs
from aiohttp import web
from aiohttp_sse import EventSourceResponse

from viper_protocol.converter import converter, dumps, strict_converter, structure_query
from viper_protocol.errors import BadRequest
from viper_protocol.models.common import JSONValue
from viper_protocol.models.events import Event, EventType
from viper_server.events import Subscription
from viper_server.keys import engine_key, streams_key
from viper_server.web.openapi import SSE, operation
from viper_server.web.streams import cancel_and_wait, race_stop

routes = web.RouteTableDef()

SSE_SEPARATOR = "\n"


@attrs.frozen(kw_only=True)
class EventsQuery:
    """Filters of an event stream: comma-separated `types`, one `vm`, replay `after` an id."""

    types: str | None = None
    vm: str | None = None
    after: int | None = None


def parse_filters(
    request: web.Request, last_event_id: str | None = None
) -> tuple[list[str] | None, str | None, int | None]:
    """The (types, vm, after_id) a stream was asked for.

    Raises:
        cattrs.BaseValidationError: an unknown query parameter or a wrong type.
        BadRequest: an unknown event type or a `Last-Event-ID` that is not a number.
    """
    # `token` is the API key of clients that cannot set headers; it is not a filter.
    params = {k: v for k, v in request.query.items() if k != "token"}
    query = structure_query(strict_converter, params, EventsQuery)
    types = None
    if query.types:
        types = [t.strip() for t in query.types.split(",") if t.strip()]
        known = {str(t) for t in EventType}
        unknown = sorted(set(types) - known)
        if unknown:
            allowed = cast("list[JSONValue]", sorted(known))
            raise BadRequest(f"unknown event type(s): {', '.join(unknown)}", {"known": allowed})
    after = query.after
    if last_event_id:
        try:
            after = int(last_event_id)
        except ValueError:
            raise BadRequest("Last-Event-ID must be an event id (a number)") from None
    return types, query.vm, after


async def next_event(sub: Subscription) -> Event | None:
    try:
        return await sub.__anext__()
    except StopAsyncIteration:
        return None


@contextlib.asynccontextmanager
async def event_stream(
    request: web.Request, types: list[str] | None, vm: str | None, after: int | None
) -> AsyncIterator[tuple[Subscription, asyncio.Event]]:
    """Subscribe to the bus and register the stream for shutdown; yields (events, stop)."""
    bus = request.app[engine_key].bus
    async with (
        bus.subscribe(types, vm, after_id=after) as sub,
        request.app[streams_key].track() as stop,
    ):
        yield sub, stop


def event_json(event: Event) -> str:
    """An event as compact JSON, `type` included."""
    return dumps(converter, event, unstructure_as=Event)


@routes.get("/api/v1/events")
@operation(
    summary="Lifecycle events (SSE), with replay after Last-Event-ID",
    tag="events",
    query=EventsQuery,
    content=(SSE,),
    errors=(400, 422),
    description="`event:` is the type, `id:` the sequence number, `data:` the event JSON. "
    "Send `Last-Event-ID` (or `?after=`) to replay stored events first.",
)
async def events(request: web.Request) -> web.StreamResponse:
    """Stream lifecycle events until the client leaves or the server shuts down."""
    types, vm, after = parse_filters(request, request.headers.get("Last-Event-ID"))
    response = EventSourceResponse(sep=SSE_SEPARATOR)
    async with event_stream(request, types, vm, after) as (sub, stop):
        await response.prepare(request)
        gone = asyncio.ensure_future(response.wait())
        gone.add_done_callback(lambda _: stop.set())
        try:
            while (event := await race_stop(next_event(sub), stop)) is not None:
                await response.send(event_json(event), id=str(event.id), event=str(event.type))
        except ConnectionResetError:
            pass
        finally:
            response.stop_streaming()
            await cancel_and_wait(gone)
    return response
