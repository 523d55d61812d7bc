"""Which accelerator QEMU uses: KVM only when a real guest boot proves it runs at speed.

`/dev/kvm` and even the vmx/svm flags are not proof: on PVM hosts the device exists and a stock
guest kernel crawls (300 s to reach the `Memory:` line, microvm-notes.md section 0), or QEMU
aborts on an MSR. So on hosts that pass `viper_server.kvm.heuristic_probe`, `boot_probe` boots
the guest kernel itself under `-enable-kvm` with no root filesystem: at speed it panics on the
missing root within a second or two and QEMU exits (`panic=-1 -no-reboot`); a slow or broken KVM
does not get there before the deadline. The verdict is cached in the state directory (keyed by
host kernel, QEMU binary and guest kernel) and recorded with `kvm.set_probe_result`, so
`/api/v1/system` reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from viper_protocol.models.system import KVMInfo
from viper_server import kvm

logger = logging.getLogger(__name__)

AccelChoice = Literal["auto", "kvm", "tcg"]
ACCEL_CHOICES: tuple[AccelChoice, ...] = ("auto", "kvm", "tcg")
PROBE_FILE = "kvm-probe.json"
# What a guest kernel prints once it has got far: a healthy KVM gets here in about a second.
_PROGRESS_MARKS = ("Kernel panic", "VFS: Unable to mount root", "Run /init", "Freeing unused")


def host_tsc_khz(cpuinfo: Path = Path("/proc/cpuinfo")) -> int:
    """The host CPU clock in kHz, for the guest's `tsc_early_khz=` under TCG.

    TCG's emulated TSC follows the host's, and without this hint the guest kernel calibrates
    against an emulated PIT and sometimes hangs (microvm-notes.md section 1).
    """
    with contextlib.suppress(OSError):
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "cpu MHz":
                with contextlib.suppress(ValueError):
                    return round(float(value) * 1000)
    return 2_000_000


def _probe_key(qemu: str, kernel: Path) -> str:
    st = kernel.stat()
    return f"{platform.release()}|{qemu}|{kernel}|{st.st_size}|{int(st.st_mtime)}"


async def boot_probe(
    qemu: str,
    kernel: Path,
    *,
    timeout: float = 10.0,
    accel_args: Sequence[str] = ("-enable-kvm", "-cpu", "host"),
    extra_append: str = "",
) -> KVMInfo:
    """Boot `kernel` under `-enable-kvm` without a root disk and judge KVM by how far it gets.

    Never raises for a failing KVM: the answer says why it is not usable. `accel_args` and
    `extra_append` exist so the judgement itself can be exercised under TCG.
    """
    append = f"console=ttyS0 panic=-1 loglevel=4 {extra_append}".strip()
    with tempfile.TemporaryDirectory(prefix="viper-kvm-probe-") as tmp:
        log = Path(tmp) / "console.log"
        command = [
            qemu, "-M", "microvm", *accel_args, "-m", "256",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", str(kernel), "-append", append,
            "-serial", f"file:{log}",
        ]  # fmt: skip
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            return KVMInfo(present=True, usable=False, accel="tcg", detail=f"{qemu}: {exc}")
        try:
            async with asyncio.timeout(timeout):
                out, _ = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.communicate()
            out = b""
        elapsed = time.monotonic() - started
        console = log.read_text(errors="replace") if log.exists() else ""
    reached = next((mark for mark in _PROGRESS_MARKS if mark in console), None)
    if reached is not None and proc.returncode is not None and elapsed < timeout:
        return KVMInfo(
            present=True,
            usable=True,
            accel="kvm",
            detail=f"a guest kernel under KVM reached {reached!r} in {elapsed:.1f}s",
        )
    error = out.decode(errors="replace").strip().splitlines()
    why = (
        f"QEMU failed under KVM: {error[-1]}"
        if error
        else f"a guest kernel under KVM did not reach its root mount in {timeout:.0f}s"
        " (paravirtual KVM such as PVM runs stock kernels too slowly)"
    )
    return KVMInfo(present=True, usable=False, accel="tcg", detail=f"{why}; using TCG")


async def resolve_accel(
    choice: AccelChoice, *, qemu: str, kernel: Path, state_dir: Path | None
) -> KVMInfo:
    """The accelerator for `choice`: forced `kvm`/`tcg`, or for `auto` the probed verdict.

    `auto` boots a probe guest only where the cheap probe passes, and caches the result in
    `state_dir` so later server starts reuse it.
    """
    if choice == "kvm":
        return KVMInfo(present=True, usable=True, accel="kvm", detail="forced: accel=kvm")
    if choice == "tcg":
        cheap = kvm.heuristic_probe()
        return KVMInfo(present=cheap.present, usable=False, accel="tcg", detail="forced: accel=tcg")
    cheap = kvm.probe_kvm()
    if not cheap.usable or not await asyncio.to_thread(kernel.is_file):
        return cheap
    cache = state_dir / PROBE_FILE if state_dir is not None else None
    key = await asyncio.to_thread(_probe_key, qemu, kernel)
    info = _load_cached(cache, key)
    if info is None:
        info = await boot_probe(qemu, kernel)
        logger.info("KVM boot probe: %s", info.detail)
        _store_cached(cache, key, info)
    kvm.set_probe_result(info)
    return info


def _load_cached(cache: Path | None, key: str) -> KVMInfo | None:
    if cache is None:
        return None
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        data = json.loads(cache.read_text())
        if data["key"] == key:
            return KVMInfo(**data["info"])
    return None


def _store_cached(cache: Path | None, key: str, info: KVMInfo) -> None:
    if cache is None:
        return
    with contextlib.suppress(OSError):
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "info": _info_dict(info)}))
        tmp.replace(cache)


def _info_dict(info: KVMInfo) -> dict[str, object]:
    return {
        "present": info.present,
        "usable": info.usable,
        "accel": info.accel,
        "detail": info.detail,
    }
