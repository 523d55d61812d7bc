"""The accelerator choice: the KVM boot probe judged on real boots, and its cache."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from viper_protocol.models.system import KVMInfo
from viper_server import kvm
from viper_server.hypervisors.accel import PROBE_FILE, boot_probe, host_tsc_khz, resolve_accel

QEMU = shutil.which("qemu-system-x86_64")
pytestmark = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")


@pytest.fixture(autouse=True)
def _forget_probe() -> Iterator[None]:
    yield
    kvm.set_probe_result(None)


async def test_probe_judges_a_fast_boot_usable(images: Path) -> None:
    """The judgement on a guest that is fast enough: TCG here stands in for a healthy KVM."""
    assert QEMU is not None
    info = await boot_probe(
        QEMU,
        images / "vmlinuz",
        timeout=60,
        accel_args=("-accel", "tcg", "-cpu", "max"),
        extra_append=f"tsc_early_khz={host_tsc_khz()}",
    )
    assert info.usable, info.detail
    assert info.accel == "kvm"
    assert "reached" in info.detail


async def test_probe_under_kvm_on_this_host(images: Path) -> None:
    """Whatever KVM this host has, the verdict is consistent and explains itself."""
    assert QEMU is not None
    info = await boot_probe(QEMU, images / "vmlinuz", timeout=10)
    assert info.accel == ("kvm" if info.usable else "tcg")
    assert info.detail
    if not kvm.heuristic_probe().usable:  # e.g. PVM: no vmx/svm, stock kernels crawl
        assert not info.usable


async def test_auto_caches_the_verdict(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the cheap probe passes, the boot probe runs once and its verdict is cached."""
    assert QEMU is not None
    monkeypatch.setattr(
        kvm, "probe_kvm", lambda: KVMInfo(present=True, usable=True, accel="kvm", detail="flags")
    )
    first = await resolve_accel("auto", qemu=QEMU, kernel=images / "vmlinuz", state_dir=tmp_path)
    cached = json.loads((tmp_path / PROBE_FILE).read_text())
    assert cached["info"]["usable"] == first.usable
    cached["info"]["detail"] = "from the cache"
    (tmp_path / PROBE_FILE).write_text(json.dumps(cached))
    second = await resolve_accel("auto", qemu=QEMU, kernel=images / "vmlinuz", state_dir=tmp_path)
    assert second.detail == "from the cache"
    assert second.usable == first.usable


async def test_auto_without_hardware_flags_does_not_boot(tmp_path: Path) -> None:
    cheap = kvm.heuristic_probe()
    if cheap.usable:
        pytest.skip("this host has vmx/svm; covered by the caching test")
    info = await resolve_accel("auto", qemu="none", kernel=tmp_path / "k", state_dir=tmp_path)
    assert info == cheap
    assert not (tmp_path / PROBE_FILE).exists()
