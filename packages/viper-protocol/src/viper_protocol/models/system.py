"""System models: liveness and what the host can do (KVM, runtimes, image, capacity)."""

from __future__ import annotations

from datetime import datetime

import attrs

from viper_protocol.models.vms import RuntimeName


@attrs.frozen(kw_only=True)
class Health:
    """GET /healthz."""

    status: str = "ok"
    version: str


@attrs.frozen(kw_only=True)
class KVMInfo:
    """Whether KVM runs guests at speed here (probed, not guessed from /dev/kvm)."""

    present: bool
    usable: bool
    accel: str
    detail: str = ""


@attrs.frozen(kw_only=True)
class RuntimeInfo:
    """One runtime and whether this host can use it (and why not)."""

    name: RuntimeName
    available: bool
    isolated: bool
    reason: str | None = None


@attrs.frozen(kw_only=True)
class ImageManifest:
    """`manifest.json` of a built guest image."""

    kernel_version: str
    chromium_version: str
    agent_version: str
    built_at: datetime
    files: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class ImageInfo:
    """The guest image the microVM runtimes boot."""

    present: bool
    path: str
    manifest: ImageManifest | None = None
    problem: str | None = None


@attrs.frozen(kw_only=True)
class Capacity:
    """How much more this host can take."""

    cpus: int
    memory_total_mb: int
    memory_available_mb: int
    vms_total: int
    vms_running: int
    max_vms: int
    ips_free: int | None = None


@attrs.frozen(kw_only=True)
class SystemInfo:
    """GET /api/v1/system."""

    version: str
    kvm: KVMInfo
    runtimes: list[RuntimeInfo]
    default_runtime: RuntimeName
    image: ImageInfo
    capacity: Capacity
    auth_required: bool
