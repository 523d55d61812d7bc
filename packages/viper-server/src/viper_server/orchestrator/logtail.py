"""Each VM's console / process output, tailed into `VM_LOG` events.

A bottom-half task per VM follows the VM's log file (the serial console of a microVM, the
agent's output for `process`) and publishes new lines as `VM_LOG` events with
`data = {"stream": "console", "line": ...}`. A boot can print thousands of lines in a
second, so each tick publishes at most `MAX_LINES_PER_TICK` lines (in one store
transaction) and reports how many it skipped.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from viper_protocol.models.common import JSONObject
from viper_protocol.models.events import EventType
from viper_protocol.models.vms import VMStatus
from viper_server.events import to_event
from viper_server.orchestrator.state import VMHandle

if TYPE_CHECKING:
    from viper_server.orchestrator.engine import Engine

logger = logging.getLogger(__name__)

TICK = 0.5
MAX_LINES_PER_TICK = 50
MAX_LINE_BYTES = 4096
MAX_READ_BYTES = 256 * 1024


def _read_from(path: Path, offset: int) -> tuple[bytes, int] | None:
    """New bytes of `path` from `offset` (restarting at 0 if it shrank), or None if gone."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            if size < offset:
                offset = 0
            f.seek(offset)
            data = f.read(min(size - offset, MAX_READ_BYTES))
    except FileNotFoundError:
        return None
    return data, offset + len(data)


def file_size(path: Path) -> int:
    """The size of `path`, 0 if it does not exist."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


async def tail_log(engine: Engine, handle: VMHandle, path: Path, offset: int = 0) -> None:
    """Bottom half: publish the VM's new output lines as `VM_LOG` events until cancelled."""
    partial = b""
    while True:
        await asyncio.sleep(TICK)
        read = await asyncio.to_thread(_read_from, path, offset)
        if read is None:
            return
        data, offset = read
        if not data:
            continue
        lines = (partial + data).split(b"\n")
        partial = lines.pop()
        if len(partial) > MAX_LINE_BYTES:
            lines.append(partial)
            partial = b""
        texts = [ln.decode(errors="replace").rstrip("\r")[:MAX_LINE_BYTES] for ln in lines]
        texts = [t for t in texts if t.strip()]
        if texts:
            await _publish(engine, handle, texts)


async def _publish(engine: Engine, handle: VMHandle, texts: list[str]) -> None:
    shown = texts[:MAX_LINES_PER_TICK]
    batch: list[tuple[str, str, VMStatus | None, str, JSONObject | None]] = [
        (
            str(EventType.VM_LOG),
            handle.name,
            handle.status,
            line,
            {"stream": "console", "line": line},
        )
        for line in shown
    ]
    skipped = len(texts) - len(shown)
    if skipped:
        note = f"({skipped} more console lines not published)"
        batch.append(
            (
                str(EventType.VM_LOG),
                handle.name,
                handle.status,
                note,
                {"stream": "server", "line": note},
            )
        )
    for stored in await engine.store.append_events(batch):
        engine.bus.publish(to_event(stored))
