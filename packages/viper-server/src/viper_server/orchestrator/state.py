"""Per-VM runtime state the engine keeps in memory, and the `requires` state guard.

The store holds the truth that survives restarts; a `VMHandle` holds what only a running
server can: the per-VM lock, the `AsyncExitStack` of undo steps, the process, the watcher and
readiness tasks, and the last activity time for the idle timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from contextlib import AsyncExitStack
from datetime import datetime

import attrs

from viper_protocol.errors import InvalidState
from viper_protocol.models.vms import RuntimeName, VMStatus
from viper_server.hypervisors.base import VMProcess

logger = logging.getLogger("viper_server.orchestrator.vm")

# Which status may follow which (the engine checks every transition against this).
TRANSITIONS: dict[VMStatus, frozenset[VMStatus]] = {
    VMStatus.PENDING: frozenset({VMStatus.STARTING, VMStatus.STOPPING, VMStatus.CRASHED}),
    VMStatus.STARTING: frozenset({VMStatus.RUNNING, VMStatus.STOPPING, VMStatus.CRASHED}),
    VMStatus.RUNNING: frozenset({VMStatus.STOPPING, VMStatus.CRASHED}),
    VMStatus.STOPPING: frozenset({VMStatus.STOPPED, VMStatus.CRASHED}),
    VMStatus.STOPPED: frozenset(),
    VMStatus.CRASHED: frozenset(),
}


def requires(name: str, status: VMStatus, *allowed: VMStatus, action: str = "do this") -> None:
    """Raise `InvalidState` unless `status` is one of `allowed`.

    Raises:
        InvalidState: with the current state and the required ones in its details.
    """
    if status not in allowed:
        required = [str(s) for s in allowed]
        raise InvalidState(
            f"VM {name!r} is {status}; to {action} it must be {' or '.join(required)}",
            state=str(status),
            required=required,
        )


def check_transition(name: str, old: VMStatus, new: VMStatus) -> None:
    """Raise `InvalidState` if the state machine has no edge from `old` to `new`."""
    if new not in TRANSITIONS[old]:
        raise InvalidState(
            f"VM {name!r} cannot go from {old} to {new}",
            state=str(old),
            required=sorted(str(s) for s, nxt in TRANSITIONS.items() if new in nxt),
        )


@attrs.define(eq=False)
class VMHandle:
    """The in-memory side of one VM that is not yet final."""

    id: str
    name: str
    runtime: RuntimeName
    status: VMStatus
    created_monotonic: float = attrs.field(factory=time.monotonic)
    expires_at: datetime | None = None
    idle_timeout: float | None = None
    lock: asyncio.Lock = attrs.field(factory=asyncio.Lock)
    stack: AsyncExitStack = attrs.field(factory=AsyncExitStack)
    proc: VMProcess | None = None
    watcher: asyncio.Task[None] | None = None
    starter: asyncio.Task[None] | None = None
    monitor: asyncio.Task[None] | None = None
    log_tailer: asyncio.Task[None] | None = None
    ready: asyncio.Future[None] = attrs.field(
        factory=lambda: asyncio.get_running_loop().create_future()
    )
    last_activity: float = attrs.field(factory=time.monotonic)
    closing: bool = False
    """Set once a stop or crash has begun: the watcher and readiness task stand down."""
    deleted: bool = False
    expiring: bool = False
    """Set once the reaper has scheduled the destroy (TTL or idle)."""

    @property
    def log(self) -> logging.Logger:
        """This VM's child logger."""
        return logger.getChild(self.name)

    def touch(self) -> None:
        """Record API or CDP activity (for the idle timeout)."""
        self.last_activity = time.monotonic()

    def idle_for(self) -> float:
        """Seconds since the last recorded activity."""
        return time.monotonic() - self.last_activity

    def tasks(self) -> Iterable[asyncio.Task[None]]:
        """The watcher, readiness, health-monitor and log-tailing tasks that exist."""
        tasks = (self.watcher, self.starter, self.monitor, self.log_tailer)
        return [t for t in tasks if t is not None]

    async def cancel_tasks(self, *, keep_current: bool = True) -> None:
        """Cancel the VM's tasks and wait for them (never the caller's own)."""
        current = asyncio.current_task()
        for task in self.tasks():
            if task is current and keep_current:
                continue
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                # Swallow the task's own cancellation, never one aimed at the caller.
                if current is not None and current.cancelling():
                    raise
            except Exception:
                logger.exception("task %s failed while being cancelled", task.get_name())

    def fail_ready(self, exc: BaseException) -> None:
        """Make `create_vm(wait=True)` raise `exc` (if it is still waiting)."""
        if not self.ready.done():
            self.ready.set_exception(exc)
            # Mark it retrieved: nobody may be waiting, and that is fine.
            self.ready.exception()
