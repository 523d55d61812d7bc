"""Host facts for `/api/v1/system` and the choice of the default runtime (`auto`).

`auto` picks a microVM runtime only when KVM really runs guests at speed (the probe in
`viper_server.kvm`), the runtime says it can run here and the guest image is present;
otherwise `process`. The image is present when `<images>/manifest.json` parses.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from viper_protocol.converter import converter
from viper_protocol.models.system import (
    Capacity,
    ImageInfo,
    ImageManifest,
    KVMInfo,
    RuntimeInfo,
    SystemInfo,
)
from viper_protocol.models.vms import RuntimeName, VMStatus
from viper_server import __version__, kvm
from viper_server.config import RuntimeChoice, ServerConfig
from viper_server.hypervisors.base import Hypervisor

if TYPE_CHECKING:
    from viper_server.orchestrator.engine import Engine

logger = logging.getLogger(__name__)

# Preference order of `auto` among the microVM runtimes.
MICROVM_PREFERENCE = (RuntimeName.CLOUD_HYPERVISOR, RuntimeName.QEMU)


def image_info(images_dir: Path) -> ImageInfo:
    """Whether the guest image is installed in `images_dir`: `manifest.json` parses and every
    file it lists is there (their checksums are in SHA256SUMS beside it; hashing 750 MB at
    every start would cost seconds, so only presence is checked here)."""
    manifest_path = images_dir / "manifest.json"
    if not manifest_path.is_file():
        return ImageInfo(present=False, path=str(images_dir), problem=f"{manifest_path} is missing")
    try:
        manifest = converter.structure(json.loads(manifest_path.read_text()), ImageManifest)
    except (OSError, ValueError, Exception) as exc:  # cattrs errors are Exceptions too
        return ImageInfo(
            present=False, path=str(images_dir), problem=f"{manifest_path} is invalid: {exc}"
        )
    missing = sorted(name for name in manifest.files if not (images_dir / name).is_file())
    if missing:
        return ImageInfo(
            present=False,
            path=str(images_dir),
            manifest=manifest,
            problem=f"listed in manifest.json but missing: {', '.join(missing)}",
        )
    return ImageInfo(present=True, path=str(images_dir), manifest=manifest)


def _kvm_info(config: ServerConfig) -> KVMInfo:
    """The probe's verdict, with the accelerator QEMU will use (`--accel` overrides it)."""
    probe = kvm.probe_kvm()
    if config.accel == "auto" or config.accel == probe.accel:
        return probe
    return attrs.evolve(
        probe, accel=config.accel, detail=f"forced by --accel {config.accel}; probe: {probe.detail}"
    )


def pick_default_runtime(
    config: ServerConfig, hypervisors: dict[RuntimeName, Hypervisor]
) -> RuntimeName:
    """The runtime for VMs created without one: the configured one, or the `auto` choice."""
    if config.runtime is not RuntimeChoice.AUTO:
        chosen = RuntimeName(config.runtime.value)
        if chosen not in hypervisors:
            logger.warning("configured runtime %s is not installed", chosen)
        return chosen
    probe = kvm.probe_kvm()
    image = image_info(config.images_dir)
    for runtime in MICROVM_PREFERENCE:
        hv = hypervisors.get(runtime)
        if hv is None:
            continue
        available, why = hv.availability()
        if probe.usable and image.present and available:
            logger.info("auto: %s (KVM usable, image present)", runtime)
            return runtime
        logger.info(
            "auto: not %s (kvm usable=%s, image present=%s, available=%s %s)",
            runtime,
            probe.usable,
            image.present,
            available,
            why or "",
        )
    return RuntimeName.PROCESS


def _meminfo() -> tuple[int, int]:
    total = available = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "MemTotal":
                total = int(value.split()[0]) // 1024
            elif key == "MemAvailable":
                available = int(value.split()[0]) // 1024
    except (OSError, ValueError):
        pass
    return total, available


async def system_info(engine: Engine) -> SystemInfo:
    """Everything GET /api/v1/system reports."""
    config = engine.config
    runtimes = []
    for runtime in RuntimeName:
        hv = engine.hypervisors.get(runtime)
        if hv is None:
            runtimes.append(
                RuntimeInfo(
                    name=runtime,
                    available=False,
                    isolated=runtime.isolated,
                    reason="not installed",
                )
            )
            continue
        available, why = hv.availability()
        runtimes.append(
            RuntimeInfo(name=runtime, available=available, isolated=hv.isolated, reason=why)
        )
    counts = await engine.status_counts()
    leases = await engine.store.leases()
    hosts = max(config.subnet.num_addresses - 3, 0)  # minus network, gateway, broadcast
    total, available_mb = _meminfo()
    return SystemInfo(
        version=__version__,
        kvm=_kvm_info(config),
        runtimes=runtimes,
        default_runtime=engine.default_runtime,
        image=image_info(config.images_dir),
        capacity=Capacity(
            cpus=os.cpu_count() or 1,
            memory_total_mb=total,
            memory_available_mb=available_mb,
            vms_total=sum(counts.values()),
            vms_running=counts[VMStatus.RUNNING],
            max_vms=config.max_vms,
            ips_free=hosts - sum(1 for ip in leases if ip in config.subnet),
        ),
        auth_required=config.api_key is not None,
    )
