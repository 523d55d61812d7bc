"""A host process the server started or adopted, supervised through a pidfd.

Runtimes spawn with `os.posix_spawn` in a new session (so the process leads its own process
group and a Ctrl-C to the server never reaches it), rather than with asyncio's subprocess
transports: a transport kills its child when closed and warns when it is not, while Viper
must be able to leave VMs running across a server restart and adopt them later. Exit is
noticed through a pidfd in the event loop (instantly, for children and adopted processes
alike); children are reaped for their exit status, adopted processes (not our children)
report an unknown status (`returncode` stays None).

`HostVMProcess` is the part of `base.VMProcess` that every runtime shares: it holds the
`HostProcess`, the stored command line and the agent URL. Each runtime subclasses it and adds
only what differs (its control socket, its shutdown sequence).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import os
import signal
from collections import deque
from pathlib import Path

logger = logging.getLogger(__name__)

UNKNOWN_EXIT = -1
"""What `wait()` returns for an adopted process, whose exit status only its parent could read."""

POLL_INTERVAL = 0.1


def pid_alive(pid: int) -> bool:
    """True when `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the command name, which is in parentheses and may contain spaces.
    state = stat.rpartition(")")[2].split()
    return bool(state) and state[0] not in ("Z", "X")


def pid_cmdline(pid: int) -> list[str] | None:
    """The command line of `pid` from /proc, or None if it is gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if not raw:
        return None
    return raw.rstrip(b"\0").decode(errors="surrogateescape").split("\0")


def tail_lines(path: Path, lines: int) -> list[str]:
    """The last `lines` lines of a text file (empty if it does not exist)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except OSError:
        return []
    text = data.decode(errors="replace")
    return list(deque(text.splitlines(), maxlen=lines))


def spawn(command: list[str], *, log_path: Path, env: dict[str, str] | None = None) -> int:
    """Start `command` in a new session with stdout and stderr appended to `log_path`.

    Returns the PID (which is also the process group id).

    Raises:
        OSError: the executable cannot be run or the log cannot be opened.
    """
    file_actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log_path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    return os.posix_spawnp(
        command[0],
        command,
        dict(os.environ if env is None else env),
        file_actions=file_actions,
        setsid=True,
        setsigdef=(signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGCHLD),
    )


class HostProcess:
    """One supervised process (group). Implements most of `VMProcess`; runtimes wrap it."""

    def __init__(self, pid: int, *, child: bool, log_path: Path) -> None:
        self.pid = pid
        self.child = child
        self.log_path = log_path
        self.returncode: int | None = None
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[None] = self._loop.create_future()
        self._pidfd: int | None = None
        self._poller: asyncio.Task[None] | None = None
        self._watch()

    @property
    def exited(self) -> bool:
        """True once the process is gone."""
        return self._exited.done()

    def _watch(self) -> None:
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            self._mark_exited()
            return
        except OSError:  # no pidfd support: fall back to polling /proc
            self._poller = self._loop.create_task(self._poll(), name=f"pid-poll:{self.pid}")
            return
        self._loop.add_reader(self._pidfd, self._mark_exited)

    async def _poll(self) -> None:
        """Bottom half: poll /proc until the process is gone."""
        while pid_alive(self.pid):  # noqa: ASYNC110 (nothing to wait on without a pidfd)
            await asyncio.sleep(POLL_INTERVAL)
        self._mark_exited()

    def _mark_exited(self) -> None:
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if self.child and self.returncode is None:
            try:
                reaped, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # someone else reaped it: the status is lost
                pass
            else:
                if reaped == self.pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        if not self._exited.done():
            self._exited.set_result(None)

    async def wait(self) -> int:
        """Wait for the exit; the status for children, `UNKNOWN_EXIT` for adopted processes."""
        await asyncio.shield(self._exited)
        return self.returncode if self.returncode is not None else UNKNOWN_EXIT

    def signal_leader(self, sig: int) -> None:
        """Send `sig` to the process itself (ignored if gone)."""
        if not self.exited:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill_group(self) -> None:
        """SIGKILL the whole process group (leftover children included; ignored if none)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    async def stop(self, *, hard: bool, timeout: float) -> int:
        """SIGTERM and wait up to `timeout` (unless `hard`), then SIGKILL the group; reap."""
        if not hard and not self.exited:
            self.signal_leader(signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout):
                    await self.wait()
            except TimeoutError:
                logger.warning("pid %d ignored SIGTERM for %.1fs, killing it", self.pid, timeout)
        self.kill_group()
        if not self.exited:
            try:
                async with asyncio.timeout(5.0):
                    await self.wait()
            except TimeoutError:
                logger.error("pid %d survived SIGKILL for 5s", self.pid)
                return UNKNOWN_EXIT
        return self.returncode if self.returncode is not None else UNKNOWN_EXIT

    def close(self) -> None:
        """Stop watching without touching the process (it keeps running, to be adopted)."""
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if self._poller is not None:
            self._poller.cancel()
        if not self._exited.done():
            self._exited.cancel()

    def output_tail(self, lines: int = 20) -> list[str]:
        """The last lines the process wrote."""
        return tail_lines(self.log_path, lines)


class HostVMProcess(abc.ABC):
    """The members of `VMProcess` that are the same for every runtime, over one `HostProcess`.

    Subclasses implement `api_socket` and `shutdown`, and extend `output_tail` or `detach`
    where they have more to show or to close.
    """

    def __init__(self, proc: HostProcess, *, command: list[str], agent_url: str) -> None:
        self._proc = proc
        self._command = list(command)
        self._agent_url = agent_url

    @property
    def pid(self) -> int:
        """The PID of the VMM (or agent) process, which is also its process group id."""
        return self._proc.pid

    @property
    def command(self) -> list[str]:
        """The exact command line, as /proc shows it (a copy)."""
        return list(self._command)

    @property
    def agent_url(self) -> str:
        """Base URL of the VM's agent as the server reaches it."""
        return self._agent_url

    @property
    @abc.abstractmethod
    def api_socket(self) -> Path | None:
        """The VMM control socket, if the runtime has one."""

    @property
    def returncode(self) -> int | None:
        """The exit status once gone (None while running, or when adopted)."""
        return self._proc.returncode

    @property
    def exited(self) -> bool:
        """True once the process is gone."""
        return self._proc.exited

    async def wait(self) -> int:
        """Wait for the process to exit; see `HostProcess.wait`."""
        return await self._proc.wait()

    async def _wait_for(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the exit; True if the process is gone by then."""
        try:
            async with asyncio.timeout(timeout):
                await self._proc.wait()
        except TimeoutError:
            return False
        return True

    @abc.abstractmethod
    async def shutdown(self, *, hard: bool = False, timeout: float = 10.0) -> int:
        """Stop the VM the runtime's way, then kill and reap; see `VMProcess.shutdown`."""

    def output_tail(self, lines: int = 20) -> list[str]:
        """The last lines the process (and, in a VM, the serial console) wrote."""
        return self._proc.output_tail(lines)

    def detach(self) -> None:
        """Stop watching, leave the process running (for a later server to adopt)."""
        self._proc.close()
