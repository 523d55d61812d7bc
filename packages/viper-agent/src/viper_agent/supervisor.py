"""The Chromium supervisor: start, watch, restart and stop one headless Chromium.

Chromium runs in its own session (so its process group is ours to clean up), with a private
profile directory and DevTools on a port it picks itself on 127.0.0.1; the supervisor reads
that port from Chromium's own "DevTools listening on" line. Its output becomes `browser` log
entries. An unexpected exit is noticed at once (the child watcher wakes `wait()`), reported,
and followed by a restart; listeners hear about every state change.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import logging
import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from typing import Any

from viper_agent.config import BASE_CHROMIUM_FLAGS, AgentConfig
from viper_agent.logs import LogHub
from viper_protocol.errors import BrowserUnavailable, LaunchFailed
from viper_protocol.models.browser import BrowserHealth, BrowserStatus, LogLevel, LogSource
from viper_protocol.models.common import JSONValue

logger = logging.getLogger(__name__)

_LISTENING = re.compile(r"DevTools listening on (ws://[^\s]+)")
_NOISE = ("dbus/", "Fontconfig", "/org/freedesktop")
_PR_SET_PDEATHSIG = 1

StatusListener = Callable[[BrowserStatus], None]


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the agent dies hard, Chromium goes too.
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class ChromiumSupervisor:
    """Owns the Chromium process, its profile directory and its restart loop.

    Call `start()` once, `stop()` once. In between, `status` follows
    starting -> running -> (crashed -> restarting -> running)* and `endpoint` is the
    DevTools HTTP base (`http://127.0.0.1:PORT`) while running.
    """

    def __init__(self, config: AgentConfig, hub: LogHub) -> None:
        self.config = config
        self.hub = hub
        self.status = BrowserStatus.STOPPED
        self.pid: int | None = None
        self.restarts = 0
        self.last_exit_code: int | None = None
        self.port: int | None = None
        self.browser_ws_url: str | None = None
        self.profile_dir: str | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=40)
        self._listening: asyncio.Future[str] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False
        self._listeners: list[StatusListener] = []
        self.running = asyncio.Event()

    # --- public -----------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The DevTools HTTP base URL.

        Raises:
            BrowserUnavailable: Chromium is not running.
        """
        if self.status is not BrowserStatus.RUNNING or self.port is None:
            raise BrowserUnavailable(f"Chromium is {self.status.value}", {"status": self.status})
        return f"http://127.0.0.1:{self.port}"

    def add_listener(self, listener: StatusListener) -> None:
        """Call `listener(status)` on every status change."""
        self._listeners.append(listener)

    def health(self, version: str | None = None) -> BrowserHealth:
        """The supervisor's state as the protocol model."""
        return BrowserHealth(
            status=self.status,
            pid=self.pid,
            restarts=self.restarts,
            version=version,
            last_exit_code=self.last_exit_code,
        )

    async def start(self) -> None:
        """Create the profile directory, launch Chromium and wait until DevTools answers.

        Raises:
            LaunchFailed: Chromium exited or did not answer within `startup_timeout`.
        """
        self.profile_dir = tempfile.mkdtemp(prefix="viper-agent-profile-")
        self._set_status(BrowserStatus.STARTING)
        try:
            await self._launch()
        except BaseException:
            await self.stop()
            raise
        self._watcher = asyncio.create_task(self._watch(), name="chromium-watch")

    async def stop(self, timeout: float = 5.0) -> None:
        """Terminate Chromium (SIGTERM, then SIGKILL of its group), reap it, remove the profile."""
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        await self._terminate(timeout)
        if self.profile_dir is not None:
            await asyncio.to_thread(shutil.rmtree, self.profile_dir, True)
            self.profile_dir = None
        self._set_status(BrowserStatus.STOPPED)

    # --- internals --------------------------------------------------------------------------

    def _set_status(self, status: BrowserStatus) -> None:
        self.status = status
        if status is BrowserStatus.RUNNING:
            self.running.set()
        else:
            self.running.clear()
        for listener in list(self._listeners):
            try:
                listener(status)
            except Exception:
                logger.exception("browser status listener failed")

    def _command(self) -> list[str]:
        assert self.profile_dir is not None
        return [
            self.config.chromium,
            *BASE_CHROMIUM_FLAGS,
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={self.profile_dir}",
            *self.config.chromium_args,
            "about:blank",
        ]

    async def _launch(self) -> None:
        command = self._command()
        self._tail.clear()
        loop = asyncio.get_running_loop()
        self._listening = loop.create_future()
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            raise LaunchFailed(
                f"cannot run {self.config.chromium}: {exc}", command=command
            ) from exc
        self._proc = proc
        self.pid = proc.pid
        self._reader = asyncio.create_task(self._read_output(proc), name="chromium-output")
        waiter: asyncio.Future[Any] = asyncio.ensure_future(proc.wait())
        listening: asyncio.Future[Any] = self._listening
        try:
            async with asyncio.timeout(self.config.startup_timeout):
                done, _ = await asyncio.wait(
                    {listening, waiter}, return_when=asyncio.FIRST_COMPLETED
                )
                if listening not in done:
                    raise LaunchFailed(
                        "Chromium exited during start-up",
                        exit_code=proc.returncode,
                        command=command,
                        output_tail=list(self._tail),
                    )
                ws_url: str = listening.result()
        except TimeoutError:
            raise LaunchFailed(
                f"Chromium did not open DevTools within {self.config.startup_timeout} s",
                command=command,
                output_tail=list(self._tail),
            ) from None
        finally:
            waiter.cancel()
        self.browser_ws_url = ws_url
        port = ws_url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
        self.port = int(port)
        logger.info(
            "Chromium pid %d ready on 127.0.0.1:%d in %.2f s",
            proc.pid,
            self.port,
            time.monotonic() - started,
        )
        self._set_status(BrowserStatus.RUNNING)

    async def _read_output(self, proc: asyncio.subprocess.Process) -> None:
        """Bottom half: turn Chromium's output into `browser` log entries."""
        assert proc.stdout is not None
        while True:
            try:
                raw = await proc.stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):
                continue  # an over-long line: skip it
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip()
            if not line:
                continue
            self._tail.append(line)
            match = _LISTENING.search(line)
            if match and self._listening is not None and not self._listening.done():
                self._listening.set_result(match.group(1))
            noise = any(n in line for n in _NOISE)
            level = LogLevel.DEBUG if noise else LogLevel.INFO
            if not noise and ":ERROR:" in line:
                level = LogLevel.ERROR
            elif not noise and ":WARNING:" in line:
                level = LogLevel.WARNING
            self.hub.publish(LogSource.BROWSER, level, line, data={"pid": proc.pid})

    async def _watch(self) -> None:
        """Bottom half: notice Chromium exiting, report it, and restart it."""
        while not self._stopping:
            proc = self._proc
            assert proc is not None
            code = await proc.wait()
            await self._reap(proc)
            if self._is_stopping():
                return
            self.last_exit_code = code
            self.pid = None
            self.port = None
            self._set_status(BrowserStatus.CRASHED)
            logger.error("Chromium exited unexpectedly with code %d; restarting", code)
            tail = list[JSONValue](list(self._tail)[-10:])
            self.hub.publish(
                LogSource.BROWSER,
                LogLevel.ERROR,
                f"Chromium exited unexpectedly (code {code})",
                data={"exit_code": code, "output_tail": tail},
            )
            await asyncio.sleep(self.config.restart_delay)
            self._set_status(BrowserStatus.RESTARTING)
            self.restarts += 1
            try:
                await self._launch()
            except LaunchFailed as exc:
                logger.error("Chromium restart failed: %s; retrying", exc.message)
                self._set_status(BrowserStatus.CRASHED)
                await asyncio.sleep(1.0)
                continue
            self.hub.publish(
                LogSource.BROWSER,
                LogLevel.INFO,
                f"Chromium restarted (pid {self.pid})",
                data={"pid": self.pid, "restarts": self.restarts},
            )

    def _is_stopping(self) -> bool:
        return self._stopping

    async def _reap(self, proc: asyncio.subprocess.Process) -> None:
        # The main process is gone; its helpers (zygote, renderers) may linger in its group.
        _kill_group(proc.pid)
        if self._reader is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(2.0):
                    await asyncio.shield(self._reader)
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None

    async def _terminate(self, timeout: float) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                async with asyncio.timeout(timeout):
                    await proc.wait()
            except TimeoutError:
                logger.warning("Chromium pid %d ignored SIGTERM; killing it", proc.pid)
                _kill_group(proc.pid)
                await proc.wait()
        await self._reap(proc)
        self._proc = None
        self.pid = None
        self.port = None
