"""The qemu runtime without a guest image: its command line, QMP against a real paused QEMU,
and launch failures (inside a throwaway namespace, since QEMU would create the tap)."""

from __future__ import annotations

import asyncio
import shutil
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import attrs
import pytest

from viper_protocol.errors import LaunchFailed
from viper_server.hypervisors.accel import host_tsc_khz, resolve_accel
from viper_server.hypervisors.base import LaunchSpec
from viper_server.hypervisors.hostproc import pid_alive
from viper_server.hypervisors.qemu import QemuHypervisor, QemuOptions, qemu_command, qmp_path
from viper_server.hypervisors.qmp import QMPClient, QMPError
from viper_server.network.base import mac_for_ip, tap_name
from viper_server.network.bridge import BridgeNetworkManager

from .helpers import netns_pids

QEMU = shutil.which("qemu-system-x86_64")
needs_qemu = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")
NET = IPv4Network("192.168.127.0/24")


def _spec(tmp_path: Path, ip: str = "192.168.127.2", vm_id: str = "abcdef0123456") -> LaunchSpec:
    address = IPv4Address(ip)
    return LaunchSpec(
        vm_id=vm_id,
        name="demo",
        cpu_cores=2,
        memory_mb=512,
        run_dir=tmp_path / "run",
        log_path=tmp_path / "console.log",
        ip=address,
        network=NET,
        gateway=IPv4Address("192.168.127.1"),
        mac=mac_for_ip(address),
        tap=tap_name(vm_id),
    )


def test_command_line_microvm_tcg(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    cmd = qemu_command(spec, QemuOptions(images_dir=Path("/img")), "tcg")
    line = " ".join(cmd)
    assert cmd[0] == "qemu-system-x86_64"
    assert "-M microvm,rtc=on -accel tcg,tb-size=256 -cpu max -m 512 -smp 2" in line
    assert "-nodefaults -no-user-config -display none -no-reboot" in line
    assert "-kernel /img/vmlinuz -initrd /img/initrd.img" in line
    assert "file=/img/rootfs.ext4,format=raw,if=none,readonly=on" in line
    assert "-netdev tap,id=n0,ifname=vtap-abcdef012,script=no,downscript=no" in line
    assert "virtio-net-device,netdev=n0,mac=0a:58:c0:a8:7f:02" in line
    assert f"path={tmp_path / 'console.log'},append=on" in line
    assert f"unix:{tmp_path / 'run' / 'qmp.sock'},server=on,wait=off" in line
    append = cmd[cmd.index("-append") + 1].split()
    assert "ip=192.168.127.2::192.168.127.1:255.255.255.0:demo:eth0:off" in append
    assert "viper.agent_port=8080" in append
    assert f"tsc_early_khz={host_tsc_khz()}" in append
    assert "console=ttyS0" in append
    assert "panic=-1" in append


def test_command_line_kvm_and_q35(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    kvm = qemu_command(spec, QemuOptions(images_dir=Path("/img"), tcg_tb_size_mb=64), "kvm")
    assert "-enable-kvm" in kvm
    assert "tsc_early_khz" not in kvm[kvm.index("-append") + 1]
    q35 = qemu_command(spec, QemuOptions(images_dir=Path("/img"), machine="q35"), "tcg")
    assert "virtio-blk-pci,drive=root" in q35
    assert q35[q35.index("-M") + 1] == "q35"
    small = qemu_command(spec, QemuOptions(images_dir=Path("/img"), tcg_tb_size_mb=64), "tcg")
    assert "tcg,tb-size=64" in small
    default = qemu_command(spec, QemuOptions(images_dir=Path("/img"), tcg_tb_size_mb=None), "tcg")
    assert default[default.index("-accel") + 1] == "tcg"


def test_command_line_needs_network(tmp_path: Path) -> None:
    spec = LaunchSpec(
        vm_id="x", name="x", cpu_cores=1, memory_mb=256, run_dir=tmp_path, log_path=tmp_path / "l"
    )
    with pytest.raises(ValueError, match="needs ip"):
        qemu_command(spec, QemuOptions(images_dir=tmp_path), "tcg")


async def test_forced_accelerators(tmp_path: Path) -> None:
    tcg = await resolve_accel("tcg", qemu="q", kernel=tmp_path / "none", state_dir=tmp_path)
    assert (tcg.accel, tcg.usable) == ("tcg", False)
    kvm = await resolve_accel("kvm", qemu="q", kernel=tmp_path / "none", state_dir=tmp_path)
    assert kvm.accel == "kvm"
    assert "forced" in kvm.detail


@needs_qemu
async def test_qmp_against_a_paused_qemu(tmp_path: Path) -> None:
    """A real QEMU with no guest (-S): negotiate, query, error reply, quit."""
    assert QEMU is not None
    sock = tmp_path / "qmp.sock"
    proc = await asyncio.create_subprocess_exec(
        QEMU, "-M", "microvm", "-accel", "tcg", "-nodefaults", "-no-user-config",
        "-display", "none", "-S", "-qmp", f"unix:{sock},server=on,wait=off",
    )  # fmt: skip
    client = QMPClient("test")
    try:
        for _ in range(200):
            if sock.exists():
                break
            await asyncio.sleep(0.05)
        await client.connect(sock)
        assert "QMP" in client.greeting
        status = await client.execute("query-status")
        assert status["status"] == "prelaunch"
        assert status["running"] is False
        with pytest.raises(QMPError, match="CommandNotFound"):
            await client.execute("no-such-command")
        await client.execute("quit")
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        await asyncio.wait_for(client.wait_closed(), 5)
        with pytest.raises(ConnectionError):
            await client.execute("query-status")
    finally:
        await client.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@needs_qemu
async def test_launch_failure_reports_and_leaves_nothing(netns: str, tmp_path: Path) -> None:
    """Empty image files: QEMU exits at once; LaunchFailed carries the command and output."""
    images = tmp_path / "images"
    images.mkdir()
    for name in ("vmlinuz", "initrd.img", "rootfs.ext4"):
        (images / name).write_bytes(b"")
    net = BridgeNetworkManager(NET, netns=netns)
    await net.ensure_bridge()
    spec = _spec(tmp_path)
    assert spec.tap is not None
    await net.create_tap(spec.tap)
    hv = QemuHypervisor(QemuOptions(images_dir=images, accel="tcg", netns=netns))
    assert hv.availability() == (True, None)
    with pytest.raises(LaunchFailed) as info:
        await hv.launch(spec)
    details = info.value.details
    command = details["command"]
    assert isinstance(command, list)
    assert command[0] == "qemu-system-x86_64"
    assert details["output_tail"], "QEMU's error must be in the output tail"
    assert netns_pids(netns) == []
    missing = QemuHypervisor(QemuOptions(images_dir=tmp_path / "nowhere"))
    available, why = missing.availability()
    assert not available
    assert why is not None
    assert "missing vmlinuz" in why


def test_pid_alive_helper() -> None:
    assert not pid_alive(2**22 + 1)


def test_long_run_dirs_get_a_short_qmp_socket(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 80) / "run"
    spec = attrs.evolve(_spec(tmp_path), run_dir=deep)
    path = qmp_path(spec)
    assert len(str(path)) <= 107
    assert path.name == f"{spec.vm_id}-qmp.sock"
    assert qmp_path(_spec(Path("/r"))) == Path("/r/run/qmp.sock")
