"""The cloud-hypervisor runtime: its command line, its REST calls against a recorded exchange,
and launch/shutdown/adopt against a test double of the VMM (the real binary is not obtainable
here); plus an integration test that runs only where `cloud-hypervisor` is on PATH."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import sys
from collections.abc import AsyncIterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import attrs
import pytest
from aiohttp import web

from viper_protocol.errors import LaunchFailed
from viper_server.hypervisors.base import AdoptSpec, LaunchSpec
from viper_server.hypervisors.ch_api import CHAPIError, CloudHypervisorAPI
from viper_server.hypervisors.cloud_hypervisor import (
    CloudHypervisorHypervisor,
    CloudHypervisorOptions,
    ch_command,
)
from viper_server.hypervisors.hostproc import pid_alive, pid_cmdline
from viper_server.network.base import mac_for_ip, tap_name

NET = IPv4Network("192.168.127.0/24")
FAKE = Path(__file__).with_name("fake_ch.py")


def _spec(tmp_path: Path) -> LaunchSpec:
    ip = IPv4Address("192.168.127.7")
    return LaunchSpec(
        vm_id="0123456789abc",
        name="ch-demo",
        cpu_cores=2,
        memory_mb=512,
        run_dir=tmp_path / "run",
        log_path=tmp_path / "console.log",
        ip=ip,
        network=NET,
        gateway=IPv4Address("192.168.127.1"),
        mac=mac_for_ip(ip),
        tap=tap_name("0123456789abc"),
    )


def test_command_line_follows_the_documented_cli(tmp_path: Path) -> None:
    cmd = ch_command(_spec(tmp_path), CloudHypervisorOptions(images_dir=Path("/img")))
    assert cmd == [
        "cloud-hypervisor",
        "--api-socket", f"path={tmp_path / 'run' / 'ch.sock'}",
        "--kernel", "/img/vmlinux-x86_64",
        "--initramfs", "/img/initrd.img",
        "--disk", "path=/img/rootfs.ext4,readonly=on",
        "--cmdline",
        "console=ttyS0 panic=-1 quiet "
        "ip=192.168.127.7::192.168.127.1:255.255.255.0:ch-demo:eth0:off viper.agent_port=8080",
        "--cpus", "boot=2",
        "--memory", "size=512M",
        "--net", "tap=vtap-012345678,mac=0a:58:c0:a8:7f:07",
        "--serial", f"file={tmp_path / 'console.log'}",
        "--console", "off",
    ]  # fmt: skip


@pytest.fixture
async def recorded(tmp_path: Path) -> AsyncIterator[tuple[Path, list[tuple[str, str, str]]]]:
    """An in-process server on a unix socket that records requests and answers like CH."""
    log: list[tuple[str, str, str]] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        log.append((request.method, request.path, await request.text()))
        endpoint = request.path.removeprefix("/api/v1/")
        if endpoint == "vmm.ping":
            return web.json_response({"build_version": "v40.0", "version": "40.0"})
        if endpoint == "vm.info":
            return web.json_response({"config": {}, "state": "Running"})
        if endpoint == "vm.boot":
            return web.Response(status=500, text="VM is already booted")
        return web.Response(status=204)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = tmp_path / "api.sock"
    await web.UnixSite(runner, str(sock)).start()
    try:
        yield sock, log
    finally:
        await runner.cleanup()


async def test_api_calls_match_the_recorded_exchange(
    recorded: tuple[Path, list[tuple[str, str, str]]],
) -> None:
    sock, log = recorded
    async with CloudHypervisorAPI(sock) as api:
        assert (await api.ping())["version"] == "40.0"
        assert (await api.info())["state"] == "Running"
        await api.power_button()
        await api.shutdown_vm()
        await api.shutdown_vmm()
        with pytest.raises(CHAPIError) as err:
            await api._call("PUT", "vm.boot")
        assert err.value.status == 500
        assert "already booted" in err.value.body
    assert [(m, p) for m, p, _ in log] == [
        ("GET", "/api/v1/vmm.ping"),
        ("GET", "/api/v1/vm.info"),
        ("PUT", "/api/v1/vm.power-button"),
        ("PUT", "/api/v1/vm.shutdown"),
        ("PUT", "/api/v1/vmm.shutdown"),
        ("PUT", "/api/v1/vm.boot"),
    ]


async def test_api_on_a_missing_socket(tmp_path: Path) -> None:
    async with CloudHypervisorAPI(tmp_path / "nothing.sock", timeout=1) as api:
        with pytest.raises(CHAPIError) as err:
            await api.ping()
    assert err.value.status is None


@pytest.fixture
def fake_binary(tmp_path: Path) -> str:
    """The VMM double as an executable (a script with this interpreter in its shebang)."""
    path = tmp_path / "cloud-hypervisor"
    path.write_text(f"#!{sys.executable}\n" + FAKE.read_text())
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _records(spec: LaunchSpec) -> list[tuple[str, str]]:
    lines = (spec.run_dir / "ch.sock.record").read_text().splitlines()
    return [(m, p.removeprefix("/api/v1/")) for m, p, _ in map(json.loads, lines)]


async def test_launch_and_graceful_shutdown(tmp_path: Path, fake_binary: str) -> None:
    spec = _spec(tmp_path)
    hv = CloudHypervisorHypervisor(
        CloudHypervisorOptions(images_dir=tmp_path, binary=fake_binary, require_kvm=False)
    )
    vm = await hv.launch(spec)
    try:
        assert vm.agent_url == "http://192.168.127.7:8080"
        assert vm.api_socket == spec.run_dir / "ch.sock"
        assert vm.output_tail() == [
            "[vmm] fake cloud-hypervisor v40.0 starting",
            "fake guest console: booted",
        ]
        assert await vm.shutdown(timeout=5) == 0
        assert _records(spec) == [("GET", "vmm.ping"), ("PUT", "vm.power-button")]
        assert await vm.shutdown() == 0  # idempotent
    finally:
        await vm.shutdown(hard=True)


async def test_ignored_power_button_falls_back_to_api_shutdown(
    tmp_path: Path, fake_binary: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_CH_IGNORE_POWER", "1")
    spec = _spec(tmp_path)
    options = CloudHypervisorOptions(
        images_dir=tmp_path, binary=fake_binary, require_kvm=False, powerdown_timeout=0.5
    )
    vm = await CloudHypervisorHypervisor(options).launch(spec)
    try:
        assert await vm.shutdown(timeout=5) == 0
    finally:
        await vm.shutdown(hard=True)
    assert _records(spec)[1:] == [
        ("PUT", "vm.power-button"),
        ("PUT", "vm.shutdown"),
        ("PUT", "vmm.shutdown"),
    ]


async def test_adopt_then_crash_is_noticed(tmp_path: Path, fake_binary: str) -> None:
    spec = _spec(tmp_path)
    hv = CloudHypervisorHypervisor(
        CloudHypervisorOptions(images_dir=tmp_path, binary=fake_binary, require_kvm=False)
    )
    vm = await hv.launch(spec)
    try:
        command = pid_cmdline(vm.pid)  # the interpreter shows in /proc for a script
        assert command is not None
        adopt = AdoptSpec(
            vm_id=spec.vm_id,
            name=spec.name,
            pid=vm.pid,
            command=command,
            run_dir=spec.run_dir,
            log_path=spec.log_path,
            agent_url=vm.agent_url,
            api_socket=vm.api_socket,
        )
        assert await hv.adopt(attrs.evolve(adopt, command=["other"])) is None
        adopted = await hv.adopt(adopt)
        assert adopted is not None
        os.kill(vm.pid, signal.SIGKILL)
        assert await vm.wait() == -signal.SIGKILL
        assert await adopted.wait() == -1  # not our child: the status is unknown
        assert await adopted.shutdown() == -1  # already gone; closes its API client
        assert not pid_alive(vm.pid)
        assert await hv.adopt(adopt) is None
    finally:
        await vm.shutdown(hard=True)


async def test_launch_failure_reports_output(tmp_path: Path) -> None:
    binary = tmp_path / "cloud-hypervisor"
    binary.write_text("#!/bin/sh\necho 'Error booting VM: missing KVM' >&2\nexit 1\n")
    binary.chmod(0o755)
    hv = CloudHypervisorHypervisor(
        CloudHypervisorOptions(images_dir=tmp_path, binary=str(binary), require_kvm=False)
    )
    with pytest.raises(LaunchFailed) as info:
        await hv.launch(_spec(tmp_path))
    assert info.value.details["exit_code"] == 1
    assert info.value.details["output_tail"] == ["[vmm] Error booting VM: missing KVM"]


def test_availability_reasons(tmp_path: Path) -> None:
    hv = CloudHypervisorHypervisor(CloudHypervisorOptions(images_dir=tmp_path))
    available, why = hv.availability()
    assert not available
    assert why is not None


@pytest.mark.vm
@pytest.mark.skipif(
    shutil.which("cloud-hypervisor") is None,
    reason="cloud-hypervisor is not on PATH (not obtainable on this machine kind); "
    "the runtime is covered by the command-line and recorded-API tests above",
)
async def test_real_cloud_hypervisor_boots(tmp_path: Path, netns: str, images: Path) -> None:
    """Where the real VMM exists: boot the image, see the console, shut down cleanly."""
    from viper_server.network.bridge import BridgeNetworkManager

    net = BridgeNetworkManager(NET, netns=netns)
    await net.ensure_bridge()
    spec = _spec(tmp_path)
    assert spec.tap is not None
    await net.create_tap(spec.tap)
    hv = CloudHypervisorHypervisor(CloudHypervisorOptions(images_dir=images, netns=netns))
    available, why = hv.availability()
    if not available:
        pytest.skip(f"cloud-hypervisor unavailable: {why}")
    vm = await hv.launch(spec)
    try:
        assert vm.returncode is None
    finally:
        await vm.shutdown(timeout=20)
        await net.teardown()
