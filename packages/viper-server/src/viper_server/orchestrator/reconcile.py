"""Reconcile at start: make the store agree with the processes, leases, taps and files.

For every VM row that is not final, ask its runtime to adopt the process (the PID must be
alive and run the stored command line). Adopted VMs get a fresh handle, exit stack and
watcher, and carry on from where they were (a `starting` VM waits for its browser again, a
`stopping` one is destroyed). The others are marked crashed and their resources freed. Then
leases, run directories, logs and taps that belong to no live VM are removed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from viper_protocol.models.events import EventType
from viper_protocol.models.vms import VMStatus
from viper_server.hypervisors.base import AdoptSpec, VMProcess
from viper_server.hypervisors.hostproc import tail_lines
from viper_server.network.base import tap_name
from viper_server.orchestrator import cleanup, logtail
from viper_server.orchestrator.state import VMHandle
from viper_server.store import VMRecord, utcnow

if TYPE_CHECKING:
    from viper_server.orchestrator.engine import Engine

logger = logging.getLogger(__name__)


async def _adopt(engine: Engine, record: VMRecord) -> VMProcess | None:
    hv = engine.hypervisors.get(record.runtime)
    if (
        hv is None
        or record.status is VMStatus.PENDING
        or record.pid is None
        or not record.command
        or record.agent_url is None
        or record.run_dir is None
        or record.log_path is None
    ):
        return None
    spec = AdoptSpec(
        vm_id=record.id,
        name=record.name,
        pid=record.pid,
        command=list(record.command),
        run_dir=record.run_dir,
        log_path=record.log_path,
        agent_url=record.agent_url,
        api_socket=record.api_socket,
    )
    try:
        async with asyncio.timeout(10):
            return await hv.adopt(spec)
    except Exception:
        logger.exception("adopting %s failed", record.name)
        return None


async def _resume(engine: Engine, record: VMRecord, proc: VMProcess) -> VMHandle:
    """Give an adopted VM its handle back: undo steps, watcher, and what its status needs."""
    handle = VMHandle(
        id=record.id,
        name=record.name,
        runtime=record.runtime,
        status=record.status,
        expires_at=record.expires_at,
        idle_timeout=record.idle_timeout_seconds,
    )
    handle.proc = proc
    stack = handle.stack
    stack.push_async_callback(engine.store.release_ip, record.id)
    hv = engine.hypervisors[record.runtime]
    network = engine.network
    if hv.needs_network and network is not None:
        stack.push_async_callback(network.delete_tap, tap_name(record.id))
    assert record.run_dir is not None
    assert record.log_path is not None
    stack.push_async_callback(cleanup.remove_tree, record.run_dir)
    stack.callback(record.log_path.unlink, missing_ok=True)
    stack.push_async_callback(cleanup.kill, proc)
    engine._vms[record.name] = handle
    handle.watcher = asyncio.create_task(engine._watch(handle, proc), name=f"vm-watch:{record.id}")
    engine.start_log_tailer(handle, record.log_path, logtail.file_size(record.log_path))
    if record.status is VMStatus.RUNNING:
        handle.ready.set_result(None)
        engine.start_monitor(handle)
    elif record.status is VMStatus.STARTING:
        handle.starter = asyncio.create_task(
            engine._await_ready(handle), name=f"vm-ready:{record.id}"
        )
    elif record.status is VMStatus.STOPPING:
        engine.spawn(engine._destroy(handle, "finishing a stop begun before restart"), "vm-stop")
    engine.metrics.adopted += 1
    logger.info("adopted %s (pid %d, %s)", record.name, proc.pid, record.status)
    return handle


async def _mark_lost(engine: Engine, record: VMRecord) -> None:
    """A VM whose process is gone (or is not ours any more): crashed, resources freed."""
    tail = tail_lines(record.log_path, 20) if record.log_path is not None else []
    message = "the VM process was gone when the server restarted"
    if record.status is VMStatus.PENDING:
        message = "the server stopped before the VM was launched"
    await cleanup.release_leftovers(engine, record)
    record = await engine.store.update_vm(
        record.id, status=VMStatus.CRASHED, message=message, stopped_at=utcnow()
    )
    engine.metrics.crashes += 1
    await engine._emit(
        EventType.VM_CRASHED, record, message, {"exit_code": None, "output_tail": list(tail)}
    )
    logger.warning("%s: %s", record.name, message)


async def reconcile(engine: Engine) -> None:
    """Adopt live VMs, mark dead ones crashed, remove leaked leases, files and taps."""
    store = engine.store
    for record in await store.live_vms():
        proc = await _adopt(engine, record)
        if proc is None:
            await _mark_lost(engine, record)
        else:
            await _resume(engine, record, proc)
    live_ids = {h.id for h in engine._vms.values()}

    for ip, vm_id in (await store.leases()).items():
        if vm_id not in live_ids:
            logger.warning("releasing leaked lease %s of VM %s", ip, vm_id)
            await store.release_ip(vm_id)

    config = engine.config
    if config.run_root.is_dir():
        for path in config.run_root.iterdir():
            if path.name not in live_ids:
                logger.warning("removing leaked run directory %s", path)
                await cleanup.remove_tree(path)
    if config.logs_dir.is_dir():
        for path in config.logs_dir.glob("*.log"):
            if path.stem not in live_ids:
                path.unlink(missing_ok=True)

    if engine.network is not None:
        wanted = {tap_name(vm_id) for vm_id in live_ids}
        try:
            taps = await engine.network.list_taps()
        except Exception:
            logger.exception("cannot list taps; leaked taps stay")
            taps = []
        for tap in taps:
            if tap not in wanted:
                logger.warning("removing leaked tap %s", tap)
                try:
                    await engine.network.delete_tap(tap)
                except Exception:
                    logger.exception("cannot remove leaked tap %s", tap)
