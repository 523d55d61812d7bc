"""The `cloud-hypervisor` runtime: one Cloud Hypervisor VMM per VM, controlled over its API.

The command line follows Cloud Hypervisor's documented CLI: the ELF `vmlinux-x86_64` booted
directly (PVH entry), the stage-1 `initrd.img` as `--initramfs`, the shared `rootfs.ext4` as a
read-only `--disk`, `--cpus boot=N`, `--memory size=NM`, `--net tap=,mac=`, the serial console
to the VM's log file and `--console off`. The VMM's own output goes to `<run_dir>/vmm.log`
(Cloud Hypervisor truncates its `--serial file=`, so the two cannot share one file).
Shutdown: `vm.power-button` (the guest powers off), then `vm.shutdown` and `vmm.shutdown`,
then SIGTERM, then SIGKILL. Adoption checks the PID's /proc cmdline and pings the API socket.

Cloud Hypervisor needs a KVM that runs guests at speed; it has no software fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from pathlib import Path

import attrs

from viper_protocol.errors import LaunchFailed
from viper_protocol.models.vms import RuntimeName
from viper_server import kvm
from viper_server.config import ServerConfig
from viper_server.hypervisors.base import AdoptSpec, LaunchSpec, VMProcess
from viper_server.hypervisors.ch_api import CHAPIError, CloudHypervisorAPI
from viper_server.hypervisors.hostproc import (
    HostProcess,
    HostVMProcess,
    pid_alive,
    pid_cmdline,
    spawn,
    tail_lines,
)
from viper_server.hypervisors.sockpath import socket_path

logger = logging.getLogger(__name__)

KERNEL = "vmlinux-x86_64"
INITRD = "initrd.img"
ROOTFS = "rootfs.ext4"
API_SOCKET = "ch.sock"
VMM_LOG = "vmm.log"
API_WAIT = 20.0


@attrs.frozen(kw_only=True)
class CloudHypervisorOptions:
    """How the `cloud-hypervisor` runtime runs its VMs.

    Attributes:
        images_dir: where `vmlinux-x86_64`, `initrd.img` and `rootfs.ext4` are.
        binary: the Cloud Hypervisor executable.
        netns: start the VMM inside this network namespace (`ip netns exec`; tests).
        powerdown_timeout: seconds the guest gets to power off after the power button.
        require_kvm: report the runtime unavailable unless the KVM probe says KVM is usable.
        extra_append: more kernel command line arguments.
    """

    images_dir: Path
    binary: str = "cloud-hypervisor"
    netns: str | None = None
    powerdown_timeout: float = 5.0
    require_kvm: bool = True
    extra_append: tuple[str, ...] = ()


def api_socket_path(spec: LaunchSpec) -> Path:
    """The VM's API socket (in its run directory unless that path is too long)."""
    return socket_path(spec.run_dir, API_SOCKET, spec.vm_id)


def ch_command(spec: LaunchSpec, options: CloudHypervisorOptions) -> list[str]:
    """The full Cloud Hypervisor argv for one VM (what /proc/<pid>/cmdline will show).

    Raises:
        ValueError: the spec lacks the network fields a microVM needs.
    """
    if (
        spec.ip is None
        or spec.mac is None
        or spec.tap is None
        or spec.gateway is None
        or spec.network is None
    ):
        raise ValueError("the cloud-hypervisor runtime needs ip, gateway, network, mac and tap")
    images = options.images_dir
    cmdline = " ".join(
        [
            "console=ttyS0",
            "panic=-1",
            "quiet",
            f"ip={spec.ip}::{spec.gateway}:{spec.network.netmask}:{spec.name}:eth0:off",
            f"viper.agent_port={spec.agent_port}",
            *options.extra_append,
        ]
    )
    return [
        options.binary,
        "--api-socket", f"path={api_socket_path(spec)}",
        "--kernel", str(images / KERNEL),
        "--initramfs", str(images / INITRD),
        "--disk", f"path={images / ROOTFS},readonly=on",
        "--cmdline", cmdline,
        "--cpus", f"boot={spec.cpu_cores}",
        "--memory", f"size={spec.memory_mb}M",
        "--net", f"tap={spec.tap},mac={spec.mac}",
        "--serial", f"file={spec.log_path}",
        "--console", "off",
    ]  # fmt: skip


class CloudHypervisorVM(HostVMProcess):
    """A `VMProcess`: one Cloud Hypervisor process and its API client; the agent is in the guest."""

    def __init__(
        self,
        proc: HostProcess,
        *,
        command: list[str],
        agent_url: str,
        api: CloudHypervisorAPI,
        vmm_log: Path,
        powerdown_timeout: float,
    ) -> None:
        super().__init__(proc, command=command, agent_url=agent_url)
        self.api = api
        self._vmm_log = vmm_log
        self._powerdown_timeout = powerdown_timeout

    @property
    def api_socket(self) -> Path | None:
        """The Cloud Hypervisor API socket."""
        return self.api.socket_path

    async def shutdown(self, *, hard: bool = False, timeout: float = 10.0) -> int:
        """Power button, then `vm.shutdown` + `vmm.shutdown`, then SIGTERM, SIGKILL. Idempotent."""
        deadline = time.monotonic() + timeout
        if not hard and not self.exited:
            with contextlib.suppress(CHAPIError):
                await self.api.power_button()
                if not await self._wait_for(min(self._powerdown_timeout, timeout)):
                    logger.info("pid %d did not power off; shutting the VM down", self.pid)
            if not self.exited:
                with contextlib.suppress(CHAPIError):
                    await self.api.shutdown_vm()
                with contextlib.suppress(CHAPIError):
                    await self.api.shutdown_vmm()
                await self._wait_for(max(1.0, min(3.0, deadline - time.monotonic())))
        code = await self._proc.stop(hard=hard, timeout=max(1.0, deadline - time.monotonic()))
        await self.api.close()
        self.api.socket_path.unlink(missing_ok=True)
        return code

    def output_tail(self, lines: int = 20) -> list[str]:
        """The last console lines, after the VMM's own last messages (if it wrote any)."""
        vmm = tail_lines(self._vmm_log, min(5, lines))
        return [*(f"[vmm] {line}" for line in vmm), *self._proc.output_tail(lines)][-lines:]

    def detach(self) -> None:
        """Stop watching, leave the VMM running (for a later server to adopt); close the API."""
        super().detach()
        task = asyncio.get_running_loop().create_task(self.api.close())
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)


async def _wait_for_api(api: CloudHypervisorAPI, proc: HostProcess, *, wait: float) -> None:
    """Ping the API socket until it answers, unless the VMM dies first.

    Raises:
        ProcessLookupError: the VMM exited first.
        TimeoutError: no answer within `wait`.
    """
    deadline = time.monotonic() + wait
    while not proc.exited:
        if api.socket_path.exists():
            with contextlib.suppress(CHAPIError):
                await api.ping()
                return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no answer on {api.socket_path} after {wait:.0f}s")
        await asyncio.sleep(0.05)
    raise ProcessLookupError(proc.pid)


class CloudHypervisorHypervisor:
    """The `cloud-hypervisor` runtime."""

    def __init__(self, options: CloudHypervisorOptions) -> None:
        self.options = options

    @property
    def name(self) -> RuntimeName:
        """`cloud-hypervisor`."""
        return RuntimeName.CLOUD_HYPERVISOR

    @property
    def isolated(self) -> bool:
        """True: each browser runs in its own virtual machine."""
        return True

    @property
    def needs_network(self) -> bool:
        """True: each VM needs an IP lease, a MAC and a tap."""
        return True

    def availability(self) -> tuple[bool, str | None]:
        """Available with the binary, the guest image and (unless waived) a usable KVM."""
        if shutil.which(self.options.binary) is None:
            return False, f"{self.options.binary} not found on PATH"
        images = self.options.images_dir
        missing = [f for f in (KERNEL, INITRD, ROOTFS) if not (images / f).is_file()]
        if missing:
            return False, f"guest image incomplete in {images}: missing {', '.join(missing)}"
        if self.options.require_kvm:
            info = kvm.probe_kvm()
            if not info.usable:
                return False, f"needs a KVM that runs guests at speed: {info.detail}"
        return True, None

    def _prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.options.netns] if self.options.netns else []

    async def launch(self, spec: LaunchSpec) -> VMProcess:
        """Start Cloud Hypervisor for `spec` and return once its API socket answers.

        Raises:
            LaunchFailed: the VMM could not start or exited at once; nothing is left running.
        """
        try:
            command = ch_command(spec, self.options)
        except ValueError as exc:
            raise LaunchFailed(str(exc)) from exc
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        api = CloudHypervisorAPI(api_socket_path(spec))
        api.socket_path.unlink(missing_ok=True)
        vmm_log = spec.run_dir / VMM_LOG
        try:
            pid = spawn([*self._prefix(), *command], log_path=vmm_log)
        except OSError as exc:
            raise LaunchFailed(
                f"cannot run {self.options.binary}: {exc.strerror or exc}", command=command
            ) from exc
        proc = HostProcess(pid, child=True, log_path=spec.log_path)
        vm = CloudHypervisorVM(
            proc,
            command=command,
            agent_url=f"http://{spec.ip}:{spec.agent_port}",
            api=api,
            vmm_log=vmm_log,
            powerdown_timeout=self.options.powerdown_timeout,
        )
        try:
            await _wait_for_api(api, proc, wait=API_WAIT)
        except (ProcessLookupError, TimeoutError) as exc:
            code = await proc.stop(hard=True, timeout=0)
            await api.close()
            api.socket_path.unlink(missing_ok=True)
            raise LaunchFailed(
                f"Cloud Hypervisor exited at once with status {code}"
                if isinstance(exc, ProcessLookupError)
                else f"Cloud Hypervisor did not start: {exc}",
                exit_code=code,
                command=command,
                output_tail=vm.output_tail(),
            ) from exc
        except BaseException:
            await proc.stop(hard=True, timeout=0)
            await api.close()
            raise
        logger.info("started cloud-hypervisor for %s: pid %d", spec.name, pid)
        return vm

    async def adopt(self, spec: AdoptSpec) -> VMProcess | None:
        """Watch a VMM an earlier server started, if the PID still runs that command."""
        if not pid_alive(spec.pid):
            return None
        if pid_cmdline(spec.pid) != spec.command:
            logger.warning(
                "pid %d of %s runs something else now; not adopting", spec.pid, spec.name
            )
            return None
        api = CloudHypervisorAPI(
            spec.api_socket or socket_path(spec.run_dir, API_SOCKET, spec.vm_id)
        )
        try:
            await api.ping()
        except CHAPIError as exc:
            logger.warning("adopted %s but its API socket does not answer: %s", spec.name, exc)
        proc = HostProcess(spec.pid, child=False, log_path=spec.log_path)
        return CloudHypervisorVM(
            proc,
            command=spec.command,
            agent_url=spec.agent_url,
            api=api,
            vmm_log=spec.run_dir / VMM_LOG,
            powerdown_timeout=self.options.powerdown_timeout,
        )


def create(config: ServerConfig) -> CloudHypervisorHypervisor:
    """The registry's factory: images from the server config; binary from `VIPER_CH_BINARY`."""
    return CloudHypervisorHypervisor(
        CloudHypervisorOptions(
            images_dir=config.images_dir,
            binary=os.environ.get("VIPER_CH_BINARY", "cloud-hypervisor"),
        )
    )
