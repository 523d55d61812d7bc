"""Whether KVM can run guests at speed on this host: a probe, cached, not a guess.

`/dev/kvm` existing is not enough: on PVM hosts (the project's own machines) the device is
there but stock guest kernels crawl (see microvm-notes.md). Until a real boot probe exists,
"usable" means hardware virtualisation flags (`vmx`/`svm`) in /proc/cpuinfo AND /dev/kvm
openable read-write. `set_probe_result` lets a runtime that measured a real boot record it.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

from viper_protocol.models.system import KVMInfo

logger = logging.getLogger(__name__)

KVM_DEVICE = Path("/dev/kvm")
CPUINFO = Path("/proc/cpuinfo")

_override: KVMInfo | None = None


def _cpu_flags(cpuinfo: Path) -> set[str]:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def heuristic_probe(device: Path = KVM_DEVICE, cpuinfo: Path = CPUINFO) -> KVMInfo:
    """The cheap probe: present = the device exists; usable = vmx/svm flags and it opens."""
    present = device.exists()
    if not present:
        return KVMInfo(present=False, usable=False, accel="tcg", detail=f"{device} is missing")
    flags = _cpu_flags(cpuinfo)
    hw = flags & {"vmx", "svm"}
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return KVMInfo(
            present=True, usable=False, accel="tcg", detail=f"cannot open {device}: {exc.strerror}"
        )
    os.close(fd)
    if not hw:
        return KVMInfo(
            present=True,
            usable=False,
            accel="tcg",
            detail=(
                f"{device} exists but the CPU has no vmx/svm flags (paravirtual KVM such as"
                " PVM runs stock guest kernels too slowly); using TCG"
            ),
        )
    return KVMInfo(
        present=True, usable=True, accel="kvm", detail=f"hardware virtualisation: {min(hw)}"
    )


@functools.cache
def _cached_probe() -> KVMInfo:
    info = heuristic_probe()
    logger.info("KVM probe: present=%s usable=%s (%s)", info.present, info.usable, info.detail)
    return info


def probe_kvm() -> KVMInfo:
    """The KVM verdict for this host, probed once per process (or as a runtime recorded it)."""
    return _override if _override is not None else _cached_probe()


def set_probe_result(info: KVMInfo | None) -> None:
    """Record a better verdict (e.g. from timing a real guest boot); None forgets it."""
    global _override
    _override = info
