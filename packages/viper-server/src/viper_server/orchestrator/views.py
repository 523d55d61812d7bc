"""Turning store rows into the protocol's `VM`, with DevTools URLs that point at the server.

Clients never see an agent's own address: `DevToolsInfo.http_url` is the server's CDP
discovery prefix for the VM and `websocket_url` the proxied DevTools WebSocket.
"""

from __future__ import annotations

import math

from viper_protocol.models.common import JSONObject
from viper_protocol.models.vms import VM, DevToolsInfo
from viper_server.config import ServerConfig
from viper_server.store import VMRecord


def server_base(config: ServerConfig) -> tuple[str, str]:
    """The server's own HTTP and WebSocket base URLs (a wildcard bind becomes loopback)."""
    host = config.host
    if host in ("", "0.0.0.0", "::"):  # a wildcard bind: use loopback
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.port}", f"ws://{host}:{config.port}"


def devtools_info(config: ServerConfig, record: VMRecord) -> DevToolsInfo | None:
    """The VM's DevTools endpoints through the server (None until the browser ran)."""
    meta = record.devtools
    if not meta:
        return None
    http, ws = server_base(config)
    prefix = f"/api/v1/vms/{record.name}/cdp"
    return DevToolsInfo(
        browser=str(meta.get("browser", "")),
        protocol_version=str(meta.get("protocol_version", "")),
        user_agent=str(meta.get("user_agent", "")),
        http_url=http + prefix,
        websocket_url=ws + prefix + str(meta.get("websocket_path", "")),
    )


def devtools_data(config: ServerConfig, record: VMRecord) -> JSONObject:
    """`devtools_info` as the JSON object a `VM_RUNNING` event carries."""
    info = devtools_info(config, record)
    if info is None:
        return {}
    return {
        "browser": info.browser,
        "protocol_version": info.protocol_version,
        "user_agent": info.user_agent,
        "http_url": info.http_url,
        "websocket_url": info.websocket_url,
    }


def to_vm(config: ServerConfig, record: VMRecord) -> VM:
    """The protocol `VM` of a row."""
    idle = record.idle_timeout_seconds
    return VM(
        id=record.id,
        name=record.name,
        status=record.status,
        runtime=record.runtime,
        isolated=record.runtime.isolated,
        cpu_cores=record.cpu_cores,
        memory_mb=record.memory_mb,
        labels=dict(record.labels),
        ip=record.ip_address,
        mac=record.mac,
        pid=record.pid,
        ttl_seconds=record.ttl_seconds,
        idle_timeout_seconds=math.ceil(idle) if idle else None,
        expires_at=record.expires_at,
        created_at=record.created_at,
        updated_at=record.updated_at,
        started_at=record.started_at,
        stopped_at=record.stopped_at,
        exit_code=record.exit_code,
        message=record.message,
        devtools=devtools_info(config, record),
    )
