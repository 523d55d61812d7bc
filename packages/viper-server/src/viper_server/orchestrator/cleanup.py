"""Undo steps the engine pushes on a VM's exit stack, and the unwinding of that stack.

Every step is idempotent (removing what is gone is fine), so that a crash, a delete and a
reconcile after a server crash can all run them without knowing what was done already.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from viper_server.hypervisors.base import VMProcess
from viper_server.network.base import tap_name
from viper_server.store import VMRecord

if TYPE_CHECKING:
    from viper_server.orchestrator.engine import Engine
    from viper_server.orchestrator.state import VMHandle

logger = logging.getLogger(__name__)

HARD_KILL_TIMEOUT = 10.0


async def remove_tree(path: Path) -> None:
    """Remove a directory tree if it exists (in a thread: a browser profile has many files)."""
    await asyncio.to_thread(shutil.rmtree, path, ignore_errors=True)


async def kill(proc: VMProcess) -> None:
    """Hard-stop a VM process (SIGKILL its group) and reap it; nothing if already gone."""
    async with asyncio.timeout(HARD_KILL_TIMEOUT):
        await proc.shutdown(hard=True, timeout=0)


async def stop_process(handle: VMHandle, timeout: float) -> int | None:
    """Stop the VM's process: graceful within `timeout`, then hard. Returns its exit status."""
    proc = handle.proc
    if proc is None:
        return None
    try:
        async with asyncio.timeout(timeout + HARD_KILL_TIMEOUT):
            await proc.shutdown(hard=False, timeout=timeout)
    except Exception:
        handle.log.exception("graceful stop failed; killing")
        with contextlib.suppress(Exception):
            await kill(proc)
    return proc.returncode


async def unwind(handle: VMHandle) -> list[BaseException]:
    """Run every undo step of the VM (all of them, even after one fails), newest first.

    Returns the failures (the last one, chained to the earlier ones through `__context__`).
    """
    stack, handle.stack = handle.stack, AsyncExitStack()
    try:
        await stack.aclose()
    except Exception as exc:
        return [exc]
    return []


async def release_leftovers(engine: Engine, record: VMRecord) -> None:
    """Free whatever a VM without a handle may still hold: process group, tap, files, IP."""
    hv = engine.hypervisors.get(record.runtime)
    if engine.network is not None and hv is not None and hv.needs_network:
        try:
            await engine.network.delete_tap(tap_name(record.id))
        except Exception:
            logger.exception("cannot delete the tap of %s", record.name)
    leftovers = getattr(hv, "cleanup", None)
    if leftovers is not None:
        try:
            await leftovers(record.id)
        except Exception:
            logger.exception("runtime cleanup of %s failed", record.name)
    if record.run_dir is not None:
        await remove_tree(record.run_dir)
    if record.log_path is not None:
        record.log_path.unlink(missing_ok=True)
    await engine.store.release_ip(record.id)
