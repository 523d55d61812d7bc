"""VM models: statuses, runtimes, the create request and the VM record the server returns."""

from __future__ import annotations

import enum
from datetime import datetime
from ipaddress import IPv4Address

import attrs

from viper_protocol.models.common import int_range, labels, matches

NAME_PATTERN = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
NAME_RULE = (
    "must be 1-63 characters of lowercase letters, digits and '-',"
    " starting and ending with a letter or digit"
)
MIN_MEMORY_MB = 256
MAX_MEMORY_MB = 65_536
MAX_CPU_CORES = 64
MAX_TTL_SECONDS = 7 * 24 * 3600


class VMStatus(enum.StrEnum):
    """A VM's place in its life: pending -> starting -> running -> stopping -> stopped/crashed."""

    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    CRASHED = "crashed"

    @property
    def is_final(self) -> bool:
        """True once the VM can no longer run: stopped or crashed."""
        return self in (VMStatus.STOPPED, VMStatus.CRASHED)


class RuntimeName(enum.StrEnum):
    """What runs a VM: a microVM under a VMM, or plain host processes (not isolated)."""

    PROCESS = "process"
    QEMU = "qemu"
    CLOUD_HYPERVISOR = "cloud-hypervisor"

    @property
    def isolated(self) -> bool:
        """True for hardware-isolated runtimes (microVMs)."""
        return self is not RuntimeName.PROCESS


@attrs.frozen(kw_only=True)
class CreateVMRequest:
    """POST /api/v1/vms: what the caller asks for. Omitted fields take the server's defaults."""

    name: str = attrs.field(validator=matches(NAME_PATTERN, NAME_RULE))
    cpu_cores: int = attrs.field(default=1, validator=int_range(1, MAX_CPU_CORES))
    memory_mb: int = attrs.field(default=512, validator=int_range(MIN_MEMORY_MB, MAX_MEMORY_MB))
    runtime: RuntimeName | None = None
    labels: dict[str, str] = attrs.field(factory=dict, validator=labels)
    ttl_seconds: int | None = attrs.field(default=None, validator=int_range(1, MAX_TTL_SECONDS))
    idle_timeout_seconds: int | None = attrs.field(
        default=None, validator=int_range(1, MAX_TTL_SECONDS)
    )

    @classmethod
    def from_cli_args(
        cls,
        name: str,
        *,
        cpu_cores: int = 1,
        memory_mb: int = 512,
        runtime: str | None = None,
        labels: tuple[str, ...] = (),
        ttl_seconds: int | None = None,
        idle_timeout_seconds: int | None = None,
    ) -> CreateVMRequest:
        """Build a request from CLI-style arguments (`labels` as `key=value` strings).

        Raises:
            ValueError: a label is not `key=value` or a value breaks a rule of the model.
        """
        parsed: dict[str, str] = {}
        for item in labels:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"label {item!r} is not key=value")
            parsed[key] = value
        return cls(
            name=name,
            cpu_cores=cpu_cores,
            memory_mb=memory_mb,
            runtime=RuntimeName(runtime) if runtime else None,
            labels=parsed,
            ttl_seconds=ttl_seconds,
            idle_timeout_seconds=idle_timeout_seconds,
        )


@attrs.frozen(kw_only=True)
class DevToolsInfo:
    """How to reach a VM's browser over DevTools, with URLs pointing at the server."""

    browser: str
    protocol_version: str
    user_agent: str
    http_url: str
    websocket_url: str


@attrs.frozen(kw_only=True)
class VM:
    """A VM as the server reports it."""

    id: str
    name: str
    status: VMStatus
    runtime: RuntimeName
    isolated: bool
    cpu_cores: int
    memory_mb: int
    labels: dict[str, str] = attrs.field(factory=dict)
    ip: IPv4Address | None = None
    mac: str | None = None
    pid: int | None = None
    ttl_seconds: int | None = None
    idle_timeout_seconds: int | None = None
    expires_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    stopped_at: datetime | None = None
    exit_code: int | None = None
    message: str | None = None
    devtools: DevToolsInfo | None = None


@attrs.frozen(kw_only=True)
class VMList:
    """GET /api/v1/vms."""

    vms: list[VM]
