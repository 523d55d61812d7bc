"""Where a VMM's control socket goes: in the VM's run directory, unless the path is too long.

A unix socket path must fit `sun_path` (108 bytes with its NUL). State directories can be deep
(tests put them under pytest's tmp_path), so a socket whose path would not fit goes to a short
per-user directory instead (`/run/viper`, or `<tmp>/viper-<uid>` without root), named after the
VM id; the runtime removes it when the VMM is gone.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

SUN_PATH_MAX = 107


def short_dir() -> Path:
    """A short directory for sockets that do not fit under a run directory."""
    base = Path("/run/viper") if os.geteuid() == 0 else None
    if base is None or not os.access("/run", os.W_OK):
        base = Path(tempfile.gettempdir()) / f"viper-{os.getuid()}"
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    return base


def socket_path(run_dir: Path, name: str, vm_id: str) -> Path:
    """`run_dir/name` if it fits a unix socket address, else `<short dir>/<vm_id>-<name>`."""
    preferred = run_dir / name
    if len(os.fsencode(preferred)) <= SUN_PATH_MAX:
        return preferred
    return short_dir() / f"{vm_id}-{name}"
