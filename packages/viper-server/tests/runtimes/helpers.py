"""Helpers for the runtime tests: namespaces, commands run inside them, the guest image."""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[4]
IMAGE_FILES = ("vmlinuz", "initrd.img", "rootfs.ext4")
CLONE_NEWNET = 0x40000000
T = TypeVar("T")
_libc = ctypes.CDLL(None, use_errno=True)


def can_netns() -> tuple[bool, str]:
    """Whether this process may create network namespaces, and if not why."""
    if os.geteuid() != 0:
        return False, "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return False, "needs iproute2's `ip`"
    return True, ""


def run_in(ns: str, *argv: str, check: bool = True, input: str | None = None) -> str:
    """Run a command inside namespace `ns` and return its stdout."""
    out = subprocess.run(
        ["ip", "netns", "exec", ns, *argv],
        capture_output=True,
        text=True,
        check=False,
        input=input,
        timeout=60,
    )
    if check and out.returncode != 0:
        raise AssertionError(f"{argv} failed ({out.returncode}): {out.stdout}{out.stderr}")
    return out.stdout


def python_in(ns: str, code: str, *args: str, timeout: float = 60.0) -> str:
    """Run Python code (this interpreter) inside namespace `ns`; return stdout+stderr."""
    out = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    return out.stdout + out.stderr


def make_netns() -> str:
    """Create a fresh namespace `viper-t-<random>` with loopback up."""
    name = f"viper-t-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    return name


def netns_pids(name: str) -> list[int]:
    """The PIDs of the processes running inside namespace `name`."""
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


def delete_netns(name: str) -> None:
    """Kill what still runs in namespace `name` (only tests start things there), delete it."""
    for pid in netns_pids(name):
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(pid, signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def find_images() -> Path | None:
    """The guest image directory: $VIPER_IMAGES, build/artifacts, then ~/.viper/images."""
    candidates = [
        os.environ.get("VIPER_IMAGES"),
        str(REPO / "build" / "artifacts"),
        str(Path("~/.viper/images").expanduser()),
    ]
    for c in candidates:
        if c and all((Path(c) / f).is_file() for f in IMAGE_FILES):
            return Path(c)
    return None


def call_in_netns(ns: str, fn: Callable[[], T]) -> T:
    """Run `fn` on a fresh thread that first joins namespace `ns` (setns affects only it).

    The thread ends afterwards, so no pooled thread is ever left inside the namespace;
    subprocesses `fn` starts (Playwright's driver, say) inherit the namespace.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"netns:{ns}")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value
