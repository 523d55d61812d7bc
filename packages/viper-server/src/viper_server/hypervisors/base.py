"""The seam between the lifecycle engine and the runtimes that actually run a VM.

The engine owns state (store rows, leases, taps, events); a runtime only starts, watches and
stops processes. Each runtime implements `Hypervisor`; what it launches or adopts is a
`VMProcess`. The contract follows QEMU's `python/qemu/machine`: a failed launch raises
`LaunchFailed` with exit code, command and output tail after cleaning up after itself;
`CancelledError` propagates unwrapped; `shutdown` tries the soft path (QMP, the Cloud Hypervisor
API socket, SIGTERM to the agent) with a timeout, then kills, and always reaps.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Protocol

import attrs

from viper_protocol.models.vms import RuntimeName


@attrs.frozen(kw_only=True)
class LaunchSpec:
    """Everything a runtime needs to start one VM.

    `run_dir` is private to the VM (sockets, overlay files) and removed by the engine after
    the VM is gone; `log_path` receives the serial console or process output. Network fields
    are set only for runtimes with `needs_network`.
    """

    vm_id: str
    name: str
    cpu_cores: int
    memory_mb: int
    run_dir: Path
    log_path: Path
    ip: IPv4Address | None = None
    network: IPv4Network | None = None
    gateway: IPv4Address | None = None
    mac: str | None = None
    tap: str | None = None
    agent_port: int = 8080


@attrs.frozen(kw_only=True)
class AdoptSpec:
    """What the store remembers of a VM process, for adopting it after a server restart."""

    vm_id: str
    name: str
    pid: int
    command: list[str]
    run_dir: Path
    log_path: Path
    agent_url: str
    api_socket: Path | None = None


class VMProcess(Protocol):
    """A running VM (or, for `process`, a running agent) that one runtime launched or adopted."""

    @property
    def pid(self) -> int:
        """The PID of the VMM (or agent) process."""

    @property
    def command(self) -> list[str]:
        """The exact command line, stored so a restarted server can recognise the process."""

    @property
    def agent_url(self) -> str:
        """Base URL of the VM's agent as the server reaches it, e.g. `http://192.168.127.2:8080`."""

    @property
    def api_socket(self) -> Path | None:
        """The VMM control socket (QMP or Cloud Hypervisor API), if any."""

    @property
    def returncode(self) -> int | None:
        """The exit status once the process is gone, else None."""

    async def wait(self) -> int:
        """Wait until the process exits and return its exit status (negative: killed by signal).

        Works for adopted processes too (which are not our children), by polling.
        """

    async def shutdown(self, *, hard: bool = False, timeout: float = 10.0) -> int:
        """Stop the VM: soft (control socket, then SIGTERM) unless `hard`, then SIGKILL.

        Always reaps and returns the exit status. Idempotent.
        """

    def output_tail(self, lines: int = 20) -> list[str]:
        """The last lines of the console / process output (from `log_path`)."""

    def detach(self) -> None:
        """Stop watching the process without stopping it (server exit; a later start adopts it).

        Closes pidfds and control connections; the VM keeps running.
        """


class Hypervisor(Protocol):
    """One runtime: launches and adopts `VMProcess`es."""

    @property
    def name(self) -> RuntimeName:
        """The runtime's name as the API shows it."""

    @property
    def isolated(self) -> bool:
        """True when VMs of this runtime are hardware-isolated."""

    @property
    def needs_network(self) -> bool:
        """True when each VM needs a leased IP, a MAC and a tap on the bridge."""

    def availability(self) -> tuple[bool, str | None]:
        """Whether this host can run this runtime now, and if not, why (for /api/v1/system)."""

    async def launch(self, spec: LaunchSpec) -> VMProcess:
        """Start a VM and return once its process runs (not once the browser is ready).

        Raises:
            LaunchFailed: the process could not be started or died at once; nothing is left.
        """

    async def adopt(self, spec: AdoptSpec) -> VMProcess | None:
        """Re-attach to a VM process started by an earlier server, or None if it is gone.

        The PID must be alive and its /proc cmdline must equal `spec.command`; otherwise the
        PID was reused by something else and must not be touched.
        """
