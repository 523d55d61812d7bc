"""The rows the store reads and writes, as frozen attrs classes (not the wire models).

`VMRecord` holds everything the engine needs to supervise and adopt a VM (pid, command line,
agent URL, run directory); the engine turns it into the protocol's `VM` for callers.
"""

from __future__ import annotations

from datetime import datetime
from ipaddress import IPv4Address
from pathlib import Path

import attrs

from viper_protocol.models.common import JSONObject
from viper_protocol.models.vms import RuntimeName, VMStatus


@attrs.frozen(kw_only=True)
class VMRecord:
    """One row of `vms`. `deleted_at` set means the VM is gone and only kept as history."""

    id: str
    name: str
    status: VMStatus
    runtime: RuntimeName
    cpu_cores: int
    memory_mb: int
    labels: dict[str, str] = attrs.field(factory=dict)
    pid: int | None = None
    ip_address: IPv4Address | None = None
    mac: str | None = None
    kernel_cmdline: str | None = None
    ttl_seconds: int | None = None
    idle_timeout_seconds: float | None = None
    expires_at: datetime | None = None
    command: list[str] | None = None
    agent_url: str | None = None
    run_dir: Path | None = None
    log_path: Path | None = None
    api_socket: Path | None = None
    exit_code: int | None = None
    message: str | None = None
    devtools: JSONObject | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    stopped_at: datetime | None = None
    deleted_at: datetime | None = None


@attrs.frozen(kw_only=True)
class StoredEvent:
    """One row of `events`: what the bus publishes, with the store's sequence number as `id`."""

    id: int
    type: str
    vm: str
    status: VMStatus | None
    message: str
    timestamp: datetime
    data: JSONObject = attrs.field(factory=dict)
