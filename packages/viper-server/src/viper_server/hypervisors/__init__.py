"""Runtimes that run a VM: `process` (host processes), `qemu` and `cloud-hypervisor` (microVMs).

`HYPERVISORS` maps each runtime to the module implementing it; each such module exposes
`create(config: ServerConfig) -> Hypervisor`. `build_hypervisors` instantiates every runtime
whose module is installed; the engine reports the others as unavailable.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable

from viper_protocol.models.vms import RuntimeName
from viper_server.config import ServerConfig
from viper_server.hypervisors.base import Hypervisor

logger = logging.getLogger(__name__)

HypervisorFactory = Callable[[ServerConfig], Hypervisor]

HYPERVISORS: dict[RuntimeName, str] = {
    RuntimeName.PROCESS: "viper_server.hypervisors.process",
    RuntimeName.QEMU: "viper_server.hypervisors.qemu",
    RuntimeName.CLOUD_HYPERVISOR: "viper_server.hypervisors.cloud_hypervisor",
}


def factory_for(runtime: RuntimeName) -> HypervisorFactory | None:
    """The `create` function of a runtime's module, or None if it is not installed."""
    try:
        module = importlib.import_module(HYPERVISORS[runtime])
    except ImportError as exc:
        logger.debug("runtime %s not installed: %s", runtime, exc)
        return None
    create: HypervisorFactory | None = getattr(module, "create", None)
    if create is None:
        logger.warning("runtime module %s has no create(config)", module.__name__)
    return create


def build_hypervisors(config: ServerConfig) -> dict[RuntimeName, Hypervisor]:
    """One instance of every installed runtime."""
    built: dict[RuntimeName, Hypervisor] = {}
    for runtime in HYPERVISORS:
        create = factory_for(runtime)
        if create is not None:
            built[runtime] = create(config)
    return built
