"""The `qemu` runtime: one `qemu-system-x86_64 -M microvm` process per VM, controlled over QMP.

The machine is `microvm` (virtio-mmio devices described by ACPI, qboot firmware): it reaches a
ready browser about 5 s sooner than q35 under TCG (microvm-notes.md section 3). q35 stays a
documented fallback for guests that need PCI (`machine="q35"` switches the devices to their
`-pci` variants); nothing here needs it. The accelerator is KVM only when `accel.resolve_accel`
proved KVM runs guests at speed, else TCG (overridable: `accel` auto|kvm|tcg).

Per VM: the read-only shared `rootfs.ext4` on virtio-blk, the stage-1 `initrd.img`, the bzImage
`vmlinuz`, a tap with the VM's MAC, the serial console and QEMU's own stderr appended to the
VM's log file, and a QMP socket `<run_dir>/qmp.sock`. Shutdown: QMP `system_powerdown` (the
guest init powers off), then QMP `quit`, then SIGTERM, then SIGKILL. Adoption checks the PID's
/proc cmdline and reconnects QMP.

`system_powerdown` on microvm presses the ACPI power button (GED). The Debian guest kernel turns
it into a `KEY_POWER` input event only with the `button` and `evdev` modules loaded, and the
guest init must watch `/dev/input/event*` and power off (measured: 0.2 s from the QMP command
to QEMU's exit). A guest that ignores it costs `powerdown_timeout` before QMP `quit`, which is
safe here: the root disk is read-only and every write went to a tmpfs.
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
from viper_protocol.models.system import KVMInfo
from viper_protocol.models.vms import RuntimeName
from viper_server.config import ServerConfig
from viper_server.hypervisors.accel import (
    ACCEL_CHOICES,
    AccelChoice,
    host_tsc_khz,
    resolve_accel,
)
from viper_server.hypervisors.base import AdoptSpec, LaunchSpec, VMProcess
from viper_server.hypervisors.hostproc import (
    HostProcess,
    HostVMProcess,
    pid_alive,
    pid_cmdline,
    spawn,
)
from viper_server.hypervisors.qmp import QMPClient, QMPError
from viper_server.hypervisors.sockpath import socket_path

logger = logging.getLogger(__name__)

KERNEL = "vmlinuz"
INITRD = "initrd.img"
ROOTFS = "rootfs.ext4"
QMP_SOCKET = "qmp.sock"
# QEMU creates the QMP socket before the guest runs; on a busy 2-core host that can take a while.
QMP_WAIT = 20.0


@attrs.frozen(kw_only=True)
class QemuOptions:
    """How the `qemu` runtime runs its VMs.

    Attributes:
        images_dir: where `vmlinuz`, `initrd.img` and `rootfs.ext4` are.
        binary: the QEMU executable.
        accel: `auto` (probe), `kvm` or `tcg`.
        machine: `microvm` (default) or `q35` (PCI devices; slower under TCG).
        state_dir: where the KVM probe's verdict is cached (None: not cached).
        netns: start QEMU inside this network namespace (`ip netns exec`; tests, benchmarks).
        tcg_tb_size_mb: TCG's translation cache in MiB (None: QEMU's default, 1 GiB). Measured
            here (bench/boot.py, 512 MiB guest): the default costs 1340 MiB PSS per idle VM,
            256 costs 848 MiB and 128 707 MiB with no slower boot; 64 doubles the boot time.
        powerdown_timeout: seconds the guest gets to power off after `system_powerdown`.
        extra_append: more kernel command line arguments.
    """

    images_dir: Path
    binary: str = "qemu-system-x86_64"
    accel: AccelChoice = "auto"
    machine: str = "microvm"
    state_dir: Path | None = None
    netns: str | None = None
    tcg_tb_size_mb: int | None = 256
    powerdown_timeout: float = 5.0
    extra_append: tuple[str, ...] = ()


def kernel_cmdline(spec: LaunchSpec, *, tcg: bool, extra: tuple[str, ...] = ()) -> str:
    """The guest kernel command line: console, network (`ip=`), agent port, TSC hint for TCG."""
    if spec.ip is None or spec.network is None or spec.gateway is None:
        raise ValueError("the qemu runtime needs ip, gateway and network")
    parts = [
        "console=ttyS0",
        "panic=-1",
        "quiet",
        f"ip={spec.ip}::{spec.gateway}:{spec.network.netmask}:{spec.name}:eth0:off",
        f"viper.agent_port={spec.agent_port}",
    ]
    if tcg:
        parts.append(f"tsc_early_khz={host_tsc_khz()}")
    return " ".join([*parts, *extra])


def qmp_path(spec: LaunchSpec) -> Path:
    """The VM's QMP socket (in its run directory unless that path is too long)."""
    return socket_path(spec.run_dir, QMP_SOCKET, spec.vm_id)


def qemu_command(spec: LaunchSpec, options: QemuOptions, accel: str) -> list[str]:
    """The full QEMU argv for one VM (what /proc/<pid>/cmdline will show).

    Raises:
        ValueError: the spec lacks the network fields a microVM needs.
    """
    if spec.ip is None or spec.mac is None or spec.tap is None or spec.gateway is None:
        raise ValueError("the qemu runtime needs ip, gateway, network, mac and tap")
    images = options.images_dir
    tcg = accel != "kvm"
    if tcg:
        tb = f",tb-size={options.tcg_tb_size_mb}" if options.tcg_tb_size_mb else ""
        accel_args = ["-accel", f"tcg{tb}", "-cpu", "max"]
    else:
        accel_args = ["-enable-kvm", "-cpu", "host"]
    # microvm: virtio-mmio devices; q35 (fallback) needs the PCI variants.
    suffix = "device" if options.machine == "microvm" else "pci"
    machine = "microvm,rtc=on" if options.machine == "microvm" else options.machine
    return [
        options.binary,
        "-name", spec.name,
        "-M", machine,
        *accel_args,
        "-m", str(spec.memory_mb),
        "-smp", str(spec.cpu_cores),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(images / KERNEL),
        "-initrd", str(images / INITRD),
        "-drive", f"id=root,file={images / ROOTFS},format=raw,if=none,readonly=on",
        "-device", f"virtio-blk-{suffix},drive=root",
        "-netdev", f"tap,id=n0,ifname={spec.tap},script=no,downscript=no",
        "-device", f"virtio-net-{suffix},netdev=n0,mac={spec.mac}",
        "-chardev", f"file,id=console,path={spec.log_path},append=on",
        "-serial", "chardev:console",
        "-qmp", f"unix:{qmp_path(spec)},server=on,wait=off",
        "-append", kernel_cmdline(spec, tcg=tcg, extra=options.extra_append),
    ]  # fmt: skip


class QemuVM(HostVMProcess):
    """A `VMProcess`: one QEMU process and its QMP connection; the agent is in the guest."""

    def __init__(
        self,
        proc: HostProcess,
        *,
        command: list[str],
        agent_url: str,
        qmp_path: Path,
        qmp: QMPClient | None,
        powerdown_timeout: float,
    ) -> None:
        super().__init__(proc, command=command, agent_url=agent_url)
        self._qmp_path = qmp_path
        self._qmp = qmp
        self._powerdown_timeout = powerdown_timeout

    @property
    def api_socket(self) -> Path | None:
        """The QMP socket."""
        return self._qmp_path

    @property
    def qmp(self) -> QMPClient | None:
        """The QMP connection, if connected."""
        return self._qmp

    async def query_status(self) -> str | None:
        """The guest run state from QMP `query-status` (`running`, `paused`...), or None."""
        if self._qmp is None or not self._qmp.connected:
            return None
        try:
            result = await self._qmp.execute("query-status")
        except (QMPError, ConnectionError, TimeoutError):
            return None
        return str(result.get("status")) if isinstance(result, dict) else None

    async def shutdown(self, *, hard: bool = False, timeout: float = 10.0) -> int:
        """Power the guest off (QMP), then `quit`, then SIGTERM, then SIGKILL. Idempotent.

        Soft steps share `timeout`: the guest gets `powerdown_timeout` of it to power off.
        """
        deadline = time.monotonic() + timeout
        if not hard and not self.exited and self._qmp is not None and self._qmp.connected:
            with contextlib.suppress(QMPError, ConnectionError, TimeoutError):
                await self._qmp.execute("system_powerdown", timeout=2.0)
                if not await self._wait_for(min(self._powerdown_timeout, timeout)):
                    logger.info("pid %d did not power off; sending quit", self.pid)
            if not self.exited:
                with contextlib.suppress(QMPError, ConnectionError, TimeoutError):
                    await self._qmp.execute("quit", timeout=2.0)
                await self._wait_for(max(1.0, min(3.0, deadline - time.monotonic())))
        code = await self._proc.stop(hard=hard, timeout=max(1.0, deadline - time.monotonic()))
        if self._qmp is not None:
            await self._qmp.close()
        # QEMU unlinks its socket on a clean exit, not when killed.
        self._qmp_path.unlink(missing_ok=True)
        return code

    def detach(self) -> None:
        """Stop watching, leave QEMU running (for a later server to adopt); close QMP."""
        super().detach()
        if self._qmp is not None:
            task = asyncio.get_running_loop().create_task(self._qmp.close())
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)


async def _connect_qmp(path: Path, proc: HostProcess, *, wait: float, name: str) -> QMPClient:
    """Connect to QEMU's QMP socket as soon as it appears, unless the process dies first.

    Raises:
        ProcessLookupError: QEMU exited before the socket answered.
        TimeoutError: the socket did not answer within `wait`.
    """
    deadline = time.monotonic() + wait
    while True:
        if proc.exited:
            raise ProcessLookupError(proc.pid)
        client = QMPClient(name)
        try:
            await client.connect(path, timeout=max(0.5, deadline - time.monotonic()))
            return client
        except (OSError, ConnectionError, ValueError):  # not up yet, or a garbled greeting
            await client.close()
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no QMP socket at {path} after {wait:.0f}s")
        await asyncio.sleep(0.05)


class QemuHypervisor:
    """The `qemu` runtime."""

    def __init__(self, options: QemuOptions) -> None:
        self.options = options
        self._accel: KVMInfo | None = None
        self._accel_lock = asyncio.Lock()

    @property
    def name(self) -> RuntimeName:
        """`qemu`."""
        return RuntimeName.QEMU

    @property
    def isolated(self) -> bool:
        """True: each browser runs in its own virtual machine."""
        return True

    @property
    def needs_network(self) -> bool:
        """True: each VM needs an IP lease, a MAC and a tap."""
        return True

    def availability(self) -> tuple[bool, str | None]:
        """Available when the QEMU binary and the guest image are present."""
        if shutil.which(self.options.binary) is None:
            return False, f"{self.options.binary} not found (apt-get install qemu-system-x86)"
        missing = [
            f for f in (KERNEL, INITRD, ROOTFS) if not (self.options.images_dir / f).is_file()
        ]
        if missing:
            return False, f"guest image incomplete in {self.options.images_dir}: missing " + (
                ", ".join(missing)
            )
        if not os.path.exists("/dev/net/tun"):
            return False, "/dev/net/tun is missing (no tap networking)"
        return True, None

    async def accel(self) -> KVMInfo:
        """The accelerator VMs use (probed once, see `accel.resolve_accel`)."""
        async with self._accel_lock:
            if self._accel is None:
                self._accel = await resolve_accel(
                    self.options.accel,
                    qemu=shutil.which(self.options.binary) or self.options.binary,
                    kernel=self.options.images_dir / KERNEL,
                    state_dir=self.options.state_dir,
                )
                logger.info("qemu accelerator: %s (%s)", self._accel.accel, self._accel.detail)
            return self._accel

    def _prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.options.netns] if self.options.netns else []

    async def launch(self, spec: LaunchSpec) -> VMProcess:
        """Start QEMU for `spec` and return once its QMP socket answers.

        Raises:
            LaunchFailed: QEMU could not start or exited at once (e.g. the tap is missing);
                nothing is left running.
        """
        accel = (await self.accel()).accel
        try:
            command = qemu_command(spec, self.options, accel)
        except ValueError as exc:
            raise LaunchFailed(str(exc)) from exc
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        qmp_sock = qmp_path(spec)
        qmp_sock.unlink(missing_ok=True)
        try:
            pid = spawn([*self._prefix(), *command], log_path=spec.log_path)
        except OSError as exc:
            raise LaunchFailed(f"cannot run QEMU: {exc.strerror or exc}", command=command) from exc
        proc = HostProcess(pid, child=True, log_path=spec.log_path)
        try:
            qmp = await _connect_qmp(qmp_sock, proc, wait=QMP_WAIT, name=spec.name)
        except (ProcessLookupError, TimeoutError, QMPError) as exc:
            code = await proc.stop(hard=True, timeout=0)
            qmp_sock.unlink(missing_ok=True)
            raise LaunchFailed(
                f"QEMU did not start: {exc}"
                if not isinstance(exc, ProcessLookupError)
                else f"QEMU exited at once with status {code}",
                exit_code=code,
                command=command,
                output_tail=proc.output_tail(),
            ) from exc
        except BaseException:
            await proc.stop(hard=True, timeout=0)
            raise
        logger.info("started qemu for %s: pid %d (%s)", spec.name, pid, accel)
        return QemuVM(
            proc,
            command=command,
            agent_url=f"http://{spec.ip}:{spec.agent_port}",
            qmp_path=qmp_sock,
            qmp=qmp,
            powerdown_timeout=self.options.powerdown_timeout,
        )

    async def adopt(self, spec: AdoptSpec) -> VMProcess | None:
        """Watch a QEMU an earlier server started, if the PID still runs that command."""
        if not pid_alive(spec.pid):
            return None
        if pid_cmdline(spec.pid) != spec.command:
            logger.warning(
                "pid %d of %s runs something else now; not adopting", spec.pid, spec.name
            )
            return None
        proc = HostProcess(spec.pid, child=False, log_path=spec.log_path)
        sock = spec.api_socket or socket_path(spec.run_dir, QMP_SOCKET, spec.vm_id)
        qmp: QMPClient | None = QMPClient(spec.name)
        try:
            assert qmp is not None
            await qmp.connect(sock, timeout=5.0)
        except (OSError, ConnectionError, TimeoutError, QMPError) as exc:
            # QEMU serves one QMP client at a time; a stale one may still hold it. Supervision
            # works through the pidfd; shutdown then falls back to signals.
            logger.warning("adopted %s without QMP: %s", spec.name, exc)
            assert qmp is not None
            await qmp.close()
            qmp = None
        return QemuVM(
            proc,
            command=spec.command,
            agent_url=spec.agent_url,
            qmp_path=sock,
            qmp=qmp,
            powerdown_timeout=self.options.powerdown_timeout,
        )


def create(config: ServerConfig) -> QemuHypervisor:
    """The registry's factory: images, state and accelerator from the server config.

    Raises:
        ValueError: `config.accel` is not auto, kvm or tcg.
    """
    accel = config.accel
    if accel not in ACCEL_CHOICES:
        raise ValueError(f"accel must be auto, kvm or tcg, not {accel!r}")
    return QemuHypervisor(
        QemuOptions(
            images_dir=config.images_dir,
            state_dir=config.state_dir,
            accel=accel,
        )
    )
