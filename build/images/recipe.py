"""What goes into the Viper guest image: package lists, trims, kernel modules, and input hashing.

Everything that decides the image's content lives here as data, so the build driver can hash it:
changing a list below changes the stage keys and rebuilds exactly the stages that depend on it.
The numbers behind these choices are in `/work/shared/microvm-notes.md` and
`docs/image-pipeline.md`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

SUITE = "bookworm"
# Chromium is only current in bookworm-security, so that line is required.
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
    "deb http://deb.debian.org/debian bookworm-updates main",
)
# Guest userland: no init system (viper-init is PID 1), no kmod (stage 1 loads the modules).
PACKAGES = (
    "python3",
    "chromium",
    "ca-certificates",
    "fonts-liberation",
    "iproute2",
    "busybox",
)
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/doc/*",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*",
)
# Removed after mmdebstrap: headless Chromium with --disable-gpu needs no mesa/LLVM (measured:
# 850 MB -> about 580 MB, pages load, JS runs, screenshots work).
SLIM = (
    "usr/lib/x86_64-linux-gnu/dri",
    "usr/lib/x86_64-linux-gnu/libLLVM-15.so.1",
    "usr/lib/x86_64-linux-gnu/libz3.so.4",
    "usr/lib/chromium/libVkLayer_khronos_validation.so",
    "usr/share/icons",
    "usr/lib/x86_64-linux-gnu/perl",
    "usr/share/perl",
    "usr/include",
    "usr/share/zoneinfo",
    "var/cache/apt",
    "var/lib/apt/lists",
    "var/log",
)
KERNEL_META_PACKAGE = "linux-image-cloud-amd64"
# Debian's cloud kernel builds every virtio driver as a module. Load order matters (no modprobe
# in stage 1): each module follows the ones it depends on. `button` + `evdev` turn QEMU's
# system_powerdown (ACPI power button) into KEY_POWER on /dev/input/event*, which viper-init
# watches.
MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_mmio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "virtio_blk",
    "failover",
    "net_failover",
    "virtio_net",
    "overlay",
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
    "virtio-rng",
    "virtio_balloon",
    "button",
    "evdev",
)
# Bump when a stage's recipe changes in a way the data above does not show.
RECIPE_VERSION = {
    "kernel": 1,
    "init": 1,
    "initrd": 1,
    "base": 1,
    "wheels": 1,
    "rootfs": 1,
    "ext4": 1,
    "initramfs": 1,
}
# Where the agent and its wheels come from, hashed for the `wheels` stage.
AGENT_SOURCES = (REPO / "packages" / "viper-protocol", REPO / "packages" / "viper-agent")
INIT_SOURCE = HERE / "viper-init.c"


def digest(*parts: object) -> str:
    """A stable short hash of JSON-able parts (the stage key)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def tree_digest(root: Path) -> str:
    """Hash of a source tree: relative paths and contents, skipping tests and caches."""
    h = hashlib.sha256()
    skip = {"__pycache__", "tests", ".pytest_cache", ".mypy_cache", ".ruff_cache", "dist"}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part in skip or part.endswith(".egg-info") for part in rel.parts):
            continue
        if path.is_file():
            h.update(str(rel).encode() + b"\0")
            h.update(path.read_bytes())
            h.update(b"\0")
    return h.hexdigest()[:20]


def file_digest(path: Path) -> str:
    """SHA-256 of a file, streamed."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
