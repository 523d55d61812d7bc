"""Fixtures for the guest image build tests: viper-init compiled on the host, the built image.

viper-init is compiled once per module with the same flags as the image build; the boot tests
need QEMU and the artefacts of `build/images/build.py` (or VIPER_IMAGES) and are marked `vm`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[4]
INIT_SOURCE = REPO / "build" / "images" / "viper-init.c"
BOOT_FILES = ("vmlinuz", "initrd.img", "rootfs.ext4")


def pytest_configure(config: pytest.Config) -> None:
    """Register the `vm` marker (slow tests that boot real microVMs)."""
    config.addinivalue_line("markers", "vm: boots real microVMs; runs only with VIPER_E2E=1")


@pytest.fixture(scope="module")
def viper_init(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """viper-init compiled statically, warnings as errors (as build.py does)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    out = tmp_path_factory.mktemp("init") / "viper-init"
    subprocess.run(
        ["gcc", "-static", "-Os", "-Wall", "-Wextra", "-Werror", "-o", str(out), str(INIT_SOURCE)],
        check=True,
    )
    return out


@pytest.fixture
def boot_image() -> Path:
    """Directory with the built kernel, stage-1 initramfs and rootfs; skips without them."""
    if os.environ.get("VIPER_E2E") != "1":
        pytest.skip("set VIPER_E2E=1 to boot real microVMs")
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    for d in (os.environ.get("VIPER_IMAGES"), REPO / "build" / "artifacts"):
        if d and all((Path(d) / f).is_file() for f in BOOT_FILES):
            return Path(d)
    pytest.skip("no built guest image: run build/images/build.py (or set VIPER_IMAGES)")
