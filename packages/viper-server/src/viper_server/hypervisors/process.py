"""The `process` runtime: the agent and its Chromium as plain host processes (not isolated).

For laptops and CI without KVM. Each "VM" is `viper-agent --host 127.0.0.1 --port <free port>`
in its own session and process group, output appended to the VM's log file, `TMPDIR` pointed
at a short per-VM directory `/tmp/viper-<id>` (the browser profile goes there; it must be short
because Chromium puts a Unix socket in it), removed once the agent is gone. It needs
no IP lease and no tap. Shutdown sends SIGTERM to the agent (which closes Chromium), then
SIGKILLs the whole group; adopting checks that the PID is alive with the stored command line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import tempfile
from collections import deque
from pathlib import Path

from viper_protocol.errors import LaunchFailed
from viper_protocol.models.vms import RuntimeName
from viper_server.config import ServerConfig
from viper_server.hypervisors.base import AdoptSpec, LaunchSpec, VMProcess
from viper_server.hypervisors.hostproc import (
    HostProcess,
    HostVMProcess,
    pid_alive,
    pid_cmdline,
    spawn,
)

logger = logging.getLogger(__name__)

# A launched agent that dies within this long counts as a failed launch, not a crash.
EARLY_EXIT_WINDOW = 0.1
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def agent_tmp_dir(vm_id: str) -> Path:
    """The agent's TMPDIR: short, because Chromium creates a Unix socket beneath it."""
    return Path(tempfile.gettempdir()) / f"viper-{vm_id[:16]}"


class AgentProcess(HostVMProcess):
    """A `VMProcess`: one agent process (group) on a loopback port, `http://127.0.0.1:<port>`."""

    def __init__(
        self,
        proc: HostProcess,
        *,
        command: list[str],
        agent_url: str,
        tmp_dir: Path | None = None,
    ) -> None:
        super().__init__(proc, command=command, agent_url=agent_url)
        self._tmp_dir = tmp_dir

    @property
    def api_socket(self) -> Path | None:
        """None: an agent process has no VMM control socket."""
        return None

    async def shutdown(self, *, hard: bool = False, timeout: float = 10.0) -> int:
        """SIGTERM the agent (unless `hard`), wait up to `timeout`, then SIGKILL the group.

        Always removes the agent's temporary directory once the process is gone.
        """
        try:
            return await self._proc.stop(hard=hard, timeout=timeout)
        finally:
            if self._tmp_dir is not None and self._proc.exited:
                await remove_tmp_dir(self._tmp_dir)


async def remove_tmp_dir(path: Path, *, attempts: int = 15, pause: float = 0.2) -> None:
    """Remove an agent's TMPDIR, retrying while something still writes into it.

    When the agent is killed outright, its Chromium outlives it for a moment (it dies with its
    parent, not with the agent's process group) and keeps creating and deleting files in the
    profile beneath this directory; one `rmtree` then races it and can leave an empty profile
    directory behind. A few retries outlast that.
    """
    for _ in range(attempts):
        if not await asyncio.to_thread(_rmtree_still_there, path):
            return
        await asyncio.sleep(pause)
    logger.warning("could not remove %s: something keeps writing into it", path)


def _rmtree_still_there(path: Path) -> bool:
    """Remove `path`; True while it still exists afterwards."""
    shutil.rmtree(path, ignore_errors=True)
    return path.exists()


class ProcessHypervisor:
    """The `process` runtime."""

    def __init__(self, config: ServerConfig) -> None:
        self._agent_command = list(config.agent_command)
        # Ports handed out lately: the kernel may offer a just-closed port again, and two
        # agents launched at once must not race for the same one.
        self._recent_ports: deque[int] = deque(maxlen=1024)

    def _pick_port(self) -> int:
        for _ in range(20):
            port = free_loopback_port()
            if port not in self._recent_ports:
                break
        self._recent_ports.append(port)
        return port

    @property
    def name(self) -> RuntimeName:
        """`process`."""
        return RuntimeName.PROCESS

    @property
    def isolated(self) -> bool:
        """False: the browser runs on the host as the server's user."""
        return False

    @property
    def needs_network(self) -> bool:
        """False: the agent listens on a loopback port; no lease, no tap."""
        return False

    def _resolved_command(self) -> list[str] | None:
        exe = self._agent_command[0]
        path = exe if os.sep in exe else shutil.which(exe)
        if path is None or not os.access(path, os.X_OK):
            return None
        return [path, *self._agent_command[1:]]

    def availability(self) -> tuple[bool, str | None]:
        """Available when the `viper-agent` command can be run and a Chromium is installed."""
        if self._resolved_command() is None:
            return (
                False,
                f"agent command {self._agent_command[0]!r} not found (install viper-agent)",
            )
        chromium = os.environ.get("VIPER_AGENT_CHROMIUM")
        if chromium:
            if not os.access(chromium, os.X_OK):
                return False, f"VIPER_AGENT_CHROMIUM={chromium} is not executable"
        elif not any(shutil.which(name) for name in CHROMIUM_NAMES):
            return False, "Chromium not found (apt-get install chromium)"
        return True, None

    async def launch(self, spec: LaunchSpec) -> VMProcess:
        """Start the agent on a free loopback port.

        Raises:
            LaunchFailed: the agent command is missing or exited at once.
        """
        base = self._resolved_command()
        if base is None:
            raise LaunchFailed(
                f"agent command {self._agent_command[0]!r} not found",
                command=self._agent_command,
            )
        port = self._pick_port()
        command = [*base, "--host", "127.0.0.1", "--port", str(port)]
        tmp_dir = agent_tmp_dir(spec.vm_id)
        tmp_dir.mkdir(mode=0o700, exist_ok=True)
        env = dict(os.environ)
        env["TMPDIR"] = str(tmp_dir)
        env["VIPER_VM_NAME"] = spec.name
        try:
            pid = spawn(command, log_path=spec.log_path, env=env)
        except OSError as exc:
            await remove_tmp_dir(tmp_dir)
            raise LaunchFailed(
                f"cannot run the agent: {exc.strerror or exc}", command=command
            ) from exc
        proc = HostProcess(pid, child=True, log_path=spec.log_path)
        try:
            async with asyncio.timeout(EARLY_EXIT_WINDOW):
                code = await proc.wait()
        except TimeoutError:
            pass
        else:
            await remove_tmp_dir(tmp_dir)
            raise LaunchFailed(
                f"the agent exited at once with status {code}",
                exit_code=code,
                command=command,
                output_tail=proc.output_tail(),
            )
        # Store what /proc shows (a script's shebang interpreter comes first), so a restarted
        # server can compare like with like.
        command = pid_cmdline(pid) or command
        logger.info("started agent for %s: pid %d on port %d", spec.name, pid, port)
        return AgentProcess(
            proc, command=command, agent_url=f"http://127.0.0.1:{port}", tmp_dir=tmp_dir
        )

    async def adopt(self, spec: AdoptSpec) -> VMProcess | None:
        """Watch an agent an earlier server started, if it is still the same process."""
        if not pid_alive(spec.pid):
            return None
        if pid_cmdline(spec.pid) != spec.command:
            logger.warning(
                "pid %d of %s runs something else now; not adopting it", spec.pid, spec.name
            )
            return None
        proc = HostProcess(spec.pid, child=False, log_path=spec.log_path)
        return AgentProcess(
            proc,
            command=spec.command,
            agent_url=spec.agent_url,
            tmp_dir=agent_tmp_dir(spec.vm_id),
        )

    async def cleanup(self, vm_id: str) -> None:
        """Remove what a VM of this runtime may have left on the host (its temp directory)."""
        await remove_tmp_dir(agent_tmp_dir(vm_id))


def create(config: ServerConfig) -> ProcessHypervisor:
    """The registry's factory for this runtime."""
    return ProcessHypervisor(config)
