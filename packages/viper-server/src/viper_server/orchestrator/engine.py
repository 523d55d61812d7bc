"""The lifecycle engine: the only place where a VM changes state.

States: pending -> starting -> running -> stopping -> stopped | crashed (`deleted` exists only
as an event, and as `deleted_at` on the row, kept as history). Every transition happens under
the VM's `asyncio.Lock`, writes the store first and then publishes exactly one event.

`create_vm` inserts the row (and the IP lease, for microVM runtimes) in one transaction, then
pushes each step's undo onto the VM's `AsyncExitStack` as it goes (lease, tap, run directory
and log, process); a failure unwinds the stack, so nothing is left behind. A watcher task per
VM turns an unexpected exit into `crashed` at once; a readiness task polls the agent until
Chromium runs; one reaper task destroys VMs past their TTL or idle timeout. `destroy` stops the
process gracefully, then SIGTERM, then SIGKILL, and unwinds the stack, releasing the IP last.
Readiness and health polling live in `health.py`, reconcile at start in `reconcile.py`,
host facts in `system.py`, row-to-model conversion in `views.py`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

from viper_protocol.errors import (
    CapacityExhausted,
    InvalidState,
    LaunchFailed,
    NotFound,
    ValidationFailed,
    ViperError,
)
from viper_protocol.models.common import JSONObject
from viper_protocol.models.events import EventType
from viper_protocol.models.system import SystemInfo
from viper_protocol.models.vms import VM, CreateVMRequest, RuntimeName, VMStatus
from viper_server.agent_client import AgentClient
from viper_server.config import ServerConfig
from viper_server.events import EventBus, to_event
from viper_server.hypervisors import build_hypervisors
from viper_server.hypervisors.base import Hypervisor, LaunchSpec, VMProcess
from viper_server.network.base import NetworkManager, tap_name
from viper_server.orchestrator import cleanup, health, logtail, reconcile, system, views
from viper_server.orchestrator.metrics import Metrics
from viper_server.orchestrator.state import VMHandle, check_transition, requires
from viper_server.store import Store, VMRecord, utcnow

logger = logging.getLogger(__name__)

LAUNCH_TIMEOUT = 60.0
PRUNE_INTERVAL = 300.0
HEALTH_POLL_INTERVAL = 0.2
HEALTH_CALL_TIMEOUT = 2.0
EVENT_TYPE_FOR = {
    VMStatus.STARTING: EventType.VM_STARTING,
    VMStatus.RUNNING: EventType.VM_RUNNING,
    VMStatus.STOPPING: EventType.VM_STOPPING,
    VMStatus.STOPPED: EventType.VM_STOPPED,
    VMStatus.CRASHED: EventType.VM_CRASHED,
}


class Engine:
    """Creates, supervises and destroys VMs. `await start()` before use, `await close()` after.

    Attributes:
        config: the server configuration.
        bus: the event bus (subscribe to it for lifecycle events).
        metrics: counters for `/metrics`.
        agent: the client for VM agents (its `session` may be borrowed for proxying).
        hypervisors: the installed runtimes.
        default_runtime: the runtime of VMs created without one (resolved from `auto`).
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        hypervisors: dict[RuntimeName, Hypervisor] | None = None,
        network: NetworkManager | None = None,
    ) -> None:
        self.config = config
        self.bus = EventBus()
        self.metrics = Metrics()
        self.agent = AgentClient()
        self.hypervisors: dict[RuntimeName, Hypervisor] = dict(hypervisors or {})
        self._hypervisors_given = hypervisors is not None
        self.network = network
        self.default_runtime = RuntimeName.PROCESS
        self._store: Store | None = None
        self._vms: dict[str, VMHandle] = {}
        self._creating = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._bridge_lock = asyncio.Lock()
        self._bridge_ready = False

    # --- lifecycle of the engine itself -------------------------------------------------

    @property
    def store(self) -> Store:
        """The open store.

        Raises:
            RuntimeError: the engine has not been started.
        """
        if self._store is None:
            raise RuntimeError("the engine is not started")
        return self._store

    async def start(self) -> None:
        """Open the store, pick the default runtime, reconcile, and start the reaper."""
        for directory in (self.config.run_root, self.config.logs_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._store = await Store.open(self.config.db_path)
        self.bus.store = self._store
        try:
            if not self._hypervisors_given:
                self.hypervisors = build_hypervisors(self.config)
            if self.network is None:
                self.network = default_network(self.config, self.hypervisors)
            self.default_runtime = system.pick_default_runtime(self.config, self.hypervisors)
            logger.info("default runtime: %s", self.default_runtime)
            await reconcile.reconcile(self)
        except BaseException:
            await self._store.close()
            self._store = None
            raise
        self._reaper = asyncio.create_task(self._reap(), name="vm-reaper")

    async def close(self) -> None:
        """Stop the reaper; destroy every VM (`stop_vms_on_exit`) or leave them to be adopted."""
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
            self._reaper = None
        if self._tasks:  # destroys the reaper started: let them finish
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        handles = list(self._vms.values())
        if self.config.stop_vms_on_exit:
            await asyncio.gather(
                *(self._destroy(h, "server shutting down") for h in handles),
                return_exceptions=True,
            )
        else:
            for handle in handles:
                await handle.cancel_tasks()
                if handle.proc is not None:
                    handle.proc.detach()
            if handles:
                logger.info("leaving %d VM(s) running for the next start to adopt", len(handles))
        self._vms.clear()
        self.bus.close()
        await self.agent.close()
        if self._store is not None:
            await self._store.close()
            self._store = None

    # --- public API ---------------------------------------------------------------------

    async def create_vm(self, req: CreateVMRequest, *, wait: bool = False) -> VM:
        """Create a VM and start launching it.

        Returns once the row exists and the runtime has started the process (status
        `starting`), or with `wait=True` once the browser answers (status `running`).

        Raises:
            ValidationFailed: the runtime is not installed or not usable on this host.
            AlreadyExists: a VM with this name exists.
            CapacityExhausted: `max_vms` reached, or no free IP.
            LaunchFailed: the runtime could not start it (or, with `wait`, the browser never
                became ready); the VM is then gone again, nothing left behind.
        """
        hv = self._runtime_for(req)
        if len(self._vms) + self._creating >= self.config.max_vms:
            raise CapacityExhausted(
                f"at most {self.config.max_vms} VMs may exist at once",
                {"max_vms": self.config.max_vms},
            )
        record = self._new_record(req, hv.name)
        self._creating += 1  # holds a slot while the insert awaits
        try:
            record = await self.store.insert_vm(
                record, lease_from=self.config.subnet if hv.needs_network else None
            )
        finally:
            self._creating -= 1
        handle = VMHandle(
            id=record.id,
            name=record.name,
            runtime=record.runtime,
            status=record.status,
            expires_at=record.expires_at,
            idle_timeout=record.idle_timeout_seconds,
        )
        self._vms[record.name] = handle
        self.metrics.creates += 1
        await self._emit(
            EventType.VM_CREATED,
            record,
            "created",
            {
                "id": record.id,
                "runtime": str(record.runtime),
                "ip": str(record.ip_address) if record.ip_address else None,
            },
        )
        try:
            async with handle.lock:
                await self._launch(handle, hv, record)
        except BaseException as exc:
            await self._forget_failed(handle, exc)
            raise
        if not handle.closing:  # the watcher may have seen it die already
            handle.starter = asyncio.create_task(
                self._await_ready(handle), name=f"vm-ready:{handle.id}"
            )
        if wait:
            try:
                await asyncio.shield(handle.ready)
            except ViperError as exc:
                await self._forget_failed(handle, exc)
                raise
        current = await self.store.get_vm(record.id)
        assert current is not None
        return self._to_vm(current)

    async def get_vm(self, name: str) -> VM:
        """The VM named `name`.

        Raises:
            NotFound: no such VM (or it was deleted).
        """
        record = await self.store.find_vm(name)
        if record is None:
            raise NotFound(f"no VM named {name!r}", {"name": name})
        return self._to_vm(record)

    async def list_vms(self, status: VMStatus | None = None) -> list[VM]:
        """Every VM that is not deleted, oldest first, optionally of one status."""
        return [self._to_vm(r) for r in await self.store.list_vms(status)]

    async def delete_vm(self, name: str) -> VM:
        """Destroy the VM and everything it holds; returns its final record.

        Works in every state (a starting VM stops starting). Idempotent while it runs:
        concurrent deletes of the same VM both return the final record.

        Raises:
            NotFound: no such VM.
        """
        handle = self._vms.get(name)
        if handle is not None:
            return self._to_vm(await self._destroy(handle, "deleted by request"))
        record = await self.store.find_vm(name)
        handle = self._vms.get(name)  # a create may have registered it meanwhile
        if handle is not None:
            return self._to_vm(await self._destroy(handle, "deleted by request"))
        if record is None:
            raise NotFound(f"no VM named {name!r}", {"name": name})
        # A final VM (stopped or crashed): its resources are gone already; make sure and drop it.
        await cleanup.release_leftovers(self, record)
        record = await self.store.update_vm(record.id, deleted_at=utcnow())
        self.metrics.deletes += 1
        await self._emit(EventType.VM_DELETED, record, "deleted")
        return self._to_vm(record)

    async def agent_url(self, name: str) -> str:
        """The base URL of the VM's agent, for proxying; records activity.

        Raises:
            NotFound: no such VM.
            InvalidState: the VM is not running.
        """
        handle = self._vms.get(name)
        if handle is None:
            record = await self.store.find_vm(name)
            if record is None:
                raise NotFound(f"no VM named {name!r}", {"name": name})
            requires(name, record.status, VMStatus.RUNNING, action="reach its browser")
            # Running on record but not supervised here (the engine is closing): not usable.
            raise InvalidState(
                f"VM {name!r} is not supervised by this server right now",
                state=str(record.status),
                required=[str(VMStatus.RUNNING)],
            )
        requires(name, handle.status, VMStatus.RUNNING, action="reach its browser")
        assert handle.proc is not None
        handle.touch()
        return handle.proc.agent_url

    def touch(self, name: str) -> None:
        """Record API or CDP activity on a VM (resets its idle timer; unknown names ignored)."""
        handle = self._vms.get(name)
        if handle is not None:
            handle.touch()

    async def system_info(self) -> SystemInfo:
        """What this host can do: KVM, runtimes, the guest image, capacity."""
        return await system.system_info(self)

    async def status_counts(self) -> dict[VMStatus, int]:
        """How many VMs (not deleted) are in each status, every status present."""
        counts = dict.fromkeys(VMStatus, 0)
        for record in await self.store.list_vms():
            counts[record.status] += 1
        return counts

    # --- creation -----------------------------------------------------------------------

    def _runtime_for(self, req: CreateVMRequest) -> Hypervisor:
        runtime = req.runtime or self.default_runtime
        hv = self.hypervisors.get(runtime)
        reason = "is not installed" if hv is None else None
        if hv is not None:
            available, why = hv.availability()
            if not available:
                reason = f"is not available on this host: {why}"
        if hv is None or reason is not None:
            raise ValidationFailed(
                f"runtime {runtime} {reason}",
                {"errors": [f"runtime {runtime} {reason} @ $.runtime"]},
            )
        return hv

    def _new_record(self, req: CreateVMRequest, runtime: RuntimeName) -> VMRecord:
        now = utcnow()
        vm_id = uuid.uuid4().hex
        idle = req.idle_timeout_seconds or self.config.idle_timeout_seconds
        return VMRecord(
            id=vm_id,
            name=req.name,
            status=VMStatus.PENDING,
            runtime=runtime,
            cpu_cores=req.cpu_cores,
            memory_mb=req.memory_mb,
            labels=dict(req.labels),
            ttl_seconds=req.ttl_seconds,
            idle_timeout_seconds=float(idle) if idle else None,
            expires_at=now + timedelta(seconds=req.ttl_seconds) if req.ttl_seconds else None,
            run_dir=self.config.run_root / vm_id,
            log_path=self.config.logs_dir / f"{vm_id}.log",
            created_at=now,
            updated_at=now,
        )

    async def _launch(self, handle: VMHandle, hv: Hypervisor, record: VMRecord) -> None:
        """Steps 1-5 of a create, each undo pushed on the stack; unwinds on any failure."""
        stack = handle.stack
        try:
            if record.ip_address is not None:
                stack.push_async_callback(self.store.release_ip, record.id)
            record = await self._transition(handle, VMStatus.STARTING, "launching")
            tap = None
            if hv.needs_network:
                network = await self._network_ready()
                tap = tap_name(record.id)
                await network.create_tap(tap)
                stack.push_async_callback(network.delete_tap, tap)
            assert record.run_dir is not None
            assert record.log_path is not None
            record.run_dir.mkdir(parents=True, exist_ok=True)
            stack.push_async_callback(cleanup.remove_tree, record.run_dir)
            record.log_path.touch()
            stack.callback(record.log_path.unlink, missing_ok=True)
            spec = self._launch_spec(record, tap)
            async with asyncio.timeout(LAUNCH_TIMEOUT):
                proc = await hv.launch(spec)
            handle.proc = proc
            stack.push_async_callback(cleanup.kill, proc)
            await self.store.update_vm(
                record.id,
                pid=proc.pid,
                command=proc.command,
                agent_url=proc.agent_url,
                api_socket=proc.api_socket,
                kernel_cmdline=self._kernel_cmdline(spec),
            )
            handle.watcher = asyncio.create_task(
                self._watch(handle, proc), name=f"vm-watch:{record.id}"
            )
            self.start_log_tailer(handle, record.log_path)
        except BaseException:
            await cleanup.unwind(handle)
            raise

    def _launch_spec(self, record: VMRecord, tap: str | None) -> LaunchSpec:
        assert record.run_dir is not None
        assert record.log_path is not None
        network = self.config.subnet if record.ip_address is not None else None
        return LaunchSpec(
            vm_id=record.id,
            name=record.name,
            cpu_cores=record.cpu_cores,
            memory_mb=record.memory_mb,
            run_dir=record.run_dir,
            log_path=record.log_path,
            ip=record.ip_address,
            network=network,
            gateway=next(network.hosts()) if network is not None else None,
            mac=record.mac,
            tap=tap,
        )

    @staticmethod
    def _kernel_cmdline(spec: LaunchSpec) -> str | None:
        if spec.ip is None or spec.network is None:
            return None
        return f"ip={spec.ip}::{spec.gateway}:{spec.network.netmask}:{spec.name}:eth0:off"

    async def _network_ready(self) -> NetworkManager:
        if self.network is None:
            raise LaunchFailed("this runtime needs host networking, but none is configured")
        async with self._bridge_lock:
            if not self._bridge_ready:
                await self.network.ensure_bridge()
                self._bridge_ready = True
        return self.network

    async def _await_ready(self, handle: VMHandle) -> None:
        """Bottom half: wait for the browser, then mark the VM running (see `health.py`)."""
        await health.await_ready(self, handle)

    def start_log_tailer(self, handle: VMHandle, path: Path, offset: int = 0) -> None:
        """Publish the VM's console / process output as `VM_LOG` events (see `logtail.py`)."""
        handle.log_tailer = asyncio.create_task(
            logtail.tail_log(self, handle, path, offset), name=f"vm-log:{handle.id}"
        )

    def start_monitor(self, handle: VMHandle, *, restarts: int | None = None) -> None:
        """Start the health monitor of a running VM (see `health.py`)."""
        health.start_monitor(self, handle, restarts=restarts)

    async def _forget_failed(self, handle: VMHandle, exc: BaseException) -> None:
        """After a create that raised: the caller got the error, so the VM goes away too."""
        if not isinstance(exc, ViperError):
            exc = LaunchFailed(f"launch failed: {exc!r}")
        await self._crash(handle, exc.message)
        async with handle.lock:
            if handle.deleted:
                return
            handle.deleted = True
            record = await self.store.update_vm(handle.id, deleted_at=utcnow())
            self._vms.pop(handle.name, None)
            await self._emit(EventType.VM_DELETED, record, "removed after a failed start")

    # --- supervision --------------------------------------------------------------------

    async def _watch(self, handle: VMHandle, proc: VMProcess) -> None:
        """Bottom half: wait for the process to exit; an exit nobody asked for is a crash."""
        code = await proc.wait()
        if handle.closing:
            return
        exit_code = proc.returncode
        what = "the agent" if handle.runtime is RuntimeName.PROCESS else "the VM"
        status = f"status {exit_code}" if exit_code is not None else "an unknown status"
        handle.log.warning("%s exited unexpectedly with %s (%d)", what, status, code)
        await self._crash(handle, f"{what} exited unexpectedly with {status}", exit_code)

    async def _crash(self, handle: VMHandle, message: str, exit_code: int | None = None) -> None:
        """Free the VM's resources and mark it crashed (once), keeping exit code and output tail."""
        async with handle.lock:
            if handle.closing:
                return
            handle.closing = True
            await handle.cancel_tasks()
            proc = handle.proc
            tail = proc.output_tail() if proc is not None else []
            command = proc.command if proc is not None else []
            if exit_code is None and proc is not None:
                exit_code = proc.returncode
            self.metrics.crashes += 1
            if handle.status in (VMStatus.PENDING, VMStatus.STARTING):
                self.metrics.create_failures += 1
            # Free everything first, so that whoever hears VM_CRASHED finds the lease and the
            # files gone already.
            errors = await cleanup.unwind(handle)
            if errors:
                handle.log.error("cleanup after crash failed: %s", errors)
            await self._transition(
                handle,
                VMStatus.CRASHED,
                message,
                data={"exit_code": exit_code, "output_tail": list(tail)},
                exit_code=exit_code,
                stopped_at=utcnow(),
            )
            handle.fail_ready(
                LaunchFailed(message, exit_code=exit_code, command=command, output_tail=tail)
            )
            if not handle.deleted and self._vms.get(handle.name) is handle:
                # Crashed VMs stay listed (from the store) until deleted; the handle goes.
                self._vms.pop(handle.name, None)

    async def _destroy(self, handle: VMHandle, reason: str) -> VMRecord:
        """Stop the VM (graceful, SIGTERM, SIGKILL), unwind its resources, mark it deleted."""
        async with handle.lock:
            record = await self.store.get_vm(handle.id)
            assert record is not None
            if handle.deleted:
                return record
            if not handle.closing:
                handle.closing = True
                await self._transition(handle, VMStatus.STOPPING, reason)
                await handle.cancel_tasks()
                exit_code = await cleanup.stop_process(handle, self.config.stop_timeout)
                handle.fail_ready(LaunchFailed(f"VM {handle.name!r} was stopped: {reason}"))
                errors = await cleanup.unwind(handle)
                if errors:
                    handle.log.error("cleanup failed: %s", errors)
                await self._transition(
                    handle, VMStatus.STOPPED, reason, exit_code=exit_code, stopped_at=utcnow()
                )
            handle.deleted = True
            record = await self.store.update_vm(handle.id, deleted_at=utcnow())
            if self._vms.get(handle.name) is handle:
                self._vms.pop(handle.name)
            self.metrics.deletes += 1
            await self._emit(EventType.VM_DELETED, record, reason)
            handle.log.info("deleted (%s)", reason)
            return record

    async def _reap(self) -> None:
        """Bottom half: every `reaper_interval`, destroy VMs past their TTL or idle timeout.

        Every `PRUNE_INTERVAL` it also trims the event log to `config.event_retention`.
        """
        last_prune = -PRUNE_INTERVAL
        while True:
            await asyncio.sleep(self.config.reaper_interval)
            if time.monotonic() - last_prune >= PRUNE_INTERVAL:
                last_prune = time.monotonic()
                try:
                    pruned = await self.store.prune_events(self.config.event_retention)
                except Exception:
                    logger.exception("pruning the event log failed")
                else:
                    if pruned:
                        logger.info("pruned %d old events", pruned)
            now = utcnow()
            for handle in list(self._vms.values()):
                if handle.closing or handle.expiring:
                    continue
                reason = None
                if handle.expires_at is not None and now >= handle.expires_at:
                    reason = "ttl expired"
                elif (
                    handle.status is VMStatus.RUNNING
                    and handle.idle_timeout is not None
                    and handle.idle_for() >= handle.idle_timeout
                ):
                    reason = f"idle for {handle.idle_for():.0f}s"
                if reason is not None:
                    handle.expiring = True
                    self.metrics.expirations += 1
                    self.spawn(self._destroy(handle, reason), f"vm-expire:{handle.id}")

    def spawn(self, coro: object, name: str) -> None:
        """Run a background coroutine owned by the engine (awaited at close)."""
        task: asyncio.Task[None] = asyncio.create_task(_logged(coro, name), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- state changes and events -------------------------------------------------------

    async def _transition(
        self,
        handle: VMHandle,
        status: VMStatus,
        message: str,
        *,
        data: JSONObject | None = None,
        **changes: object,
    ) -> VMRecord:
        """Write the new status (and `changes`) to the store, then publish its one event."""
        check_transition(handle.name, handle.status, status)
        record = await self.store.update_vm(handle.id, status=status, message=message, **changes)
        handle.status = status
        if data is None and status is VMStatus.RUNNING and record.devtools is not None:
            data = {"devtools": views.devtools_data(self.config, record)}
        await self._emit(EVENT_TYPE_FOR[status], record, message, data)
        return record

    async def _emit(
        self, type: EventType, record: VMRecord, message: str, data: JSONObject | None = None
    ) -> None:
        stored = await self.store.append_event(str(type), record.name, record.status, message, data)
        self.bus.publish(to_event(stored))

    # --- conversion ---------------------------------------------------------------------

    def _to_vm(self, record: VMRecord) -> VM:
        return views.to_vm(self.config, record)


def default_network(
    config: ServerConfig, hypervisors: dict[RuntimeName, Hypervisor]
) -> NetworkManager | None:
    """The host bridge, if some installed runtime that can run here needs it (else None).

    Nothing is changed on the host here: the bridge is created on the first microVM create.
    """
    if not any(hv.needs_network and hv.availability()[0] for hv in hypervisors.values()):
        return None
    from viper_server.network.bridge import BridgeNetworkManager

    return BridgeNetworkManager(config.subnet, api_port=config.port)


async def _logged(coro: object, name: str) -> None:
    try:
        await coro  # type: ignore[misc]
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("background task %s failed", name)


@asynccontextmanager
async def open_engine(
    config: ServerConfig,
    *,
    hypervisors: dict[RuntimeName, Hypervisor] | None = None,
    network: NetworkManager | None = None,
) -> AsyncIterator[Engine]:
    """`async with open_engine(cfg) as engine:` -- start, yield, close (cleanup-context shape)."""
    engine = Engine(config, hypervisors=hypervisors, network=network)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()
