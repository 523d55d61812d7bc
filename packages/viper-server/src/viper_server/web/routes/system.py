"""System routes: liveness, host capabilities, Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

from aiohttp import web

from viper_protocol.converter import converter
from viper_protocol.models.system import Health, SystemInfo
from viper_protocol.models.vms import VMStatus
from viper_server import __version__
from viper_server.keys import engine_key, proxy_stats_key, streams_key
from viper_server.web.metrics import CONTENT_TYPE, MetricsText
from viper_server.web.openapi import build_openapi, operation

routes = web.RouteTableDef()


@routes.get("/healthz")
@operation(summary="Liveness (no API key needed)", tag="system", response=Health)
async def healthz(request: web.Request) -> web.Response:
    """The server process answers; says nothing about VMs."""
    return web.json_response(converter.unstructure(Health(version=__version__)))


@routes.get("/api/v1/system")
@operation(
    summary="Host capabilities: KVM, runtimes, guest image, capacity",
    tag="system",
    response=SystemInfo,
)
async def system_info(request: web.Request) -> web.Response:
    """What this host can run and how much more it can take."""
    info = await request.app[engine_key].system_info()
    return web.json_response(converter.unstructure(info))


@routes.get("/metrics")
@operation(
    summary="Prometheus metrics (text exposition format)",
    tag="system",
    content=("text/plain",),
)
async def metrics(request: web.Request) -> web.Response:
    """VMs by status, creates, failures, start latency, proxy connections, event streams."""
    engine = request.app[engine_key]
    stats = request.app[proxy_stats_key]
    by_status = await engine.status_counts()
    out = MetricsText()
    out.gauge(
        "vms",
        "VMs known to the server, by status",
        {(("status", str(s)),): by_status.get(s, 0) for s in VMStatus},
    )
    counts = engine.metrics
    out.counter("vm_creates", "VM create requests accepted", {(): counts.creates})
    out.counter(
        "vm_create_failures",
        "Creates that ended without a running VM",
        {(): counts.create_failures},
    )
    out.counter("vm_crashes", "VMs that died unexpectedly", {(): counts.crashes})
    out.counter("vm_deletes", "VMs destroyed (request, TTL or idle)", {(): counts.deletes})
    out.counter("vm_expirations", "VMs destroyed by TTL or idle timeout", {(): counts.expirations})
    out.counter("vm_adopted", "VMs re-attached at server start", {(): counts.adopted})
    start = counts.start_seconds
    out.histogram(
        "vm_start_seconds",
        "Seconds from create to a running browser",
        start.buckets,
        start.counts,
        start.sum,
        start.count,
    )
    out.gauge("proxy_connections_active", "Open DevTools proxy WebSockets", {(): stats.active})
    out.counter("proxy_connections", "DevTools proxy WebSockets opened", {(): stats.total})
    out.gauge(
        "event_streams", "Open SSE and WebSocket streams", {(): len(request.app[streams_key])}
    )
    out.gauge("event_subscribers", "Event bus subscribers", {(): engine.bus.subscriber_count})
    response = web.Response(text=out.render())
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


@routes.get("/api/v1/openapi.json")
@operation(summary="This API as an OpenAPI 3.1 document", tag="system")
async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI document of every route this server has."""
    return web.json_response(build_openapi(request.app))
