"""Real microVMs from the built guest image, booted by the qemu runtime inside a namespace.

The agent is reached over the namespace's bridge by a client that runs in the namespace too.
Needs root, QEMU and the image (skipped with the reason otherwise); the full boot is slow under
TCG (~20 s here) and runs only with VIPER_E2E=1.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from viper_server.hypervisors.base import AdoptSpec, LaunchSpec
from viper_server.hypervisors.hostproc import pid_alive
from viper_server.hypervisors.qemu import QemuHypervisor, QemuOptions, QemuVM
from viper_server.network.base import mac_for_ip, tap_name
from viper_server.network.bridge import BridgeNetworkManager

from .helpers import netns_pids

NET = IPv4Network("192.168.127.0/24")
READY_DEADLINE = 240.0  # TCG on a busy 2-core host; ~17-20 s when idle

_POLL = """
import sys, time, urllib.request
url, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            print(r.status, r.read().decode()[:300]); sys.exit(0)
    except Exception:
        time.sleep(0.25)
sys.exit(1)
"""


async def get_in_netns(ns: str, url: str, deadline: float) -> str | None:
    """Poll `url` from inside namespace `ns` until it answers; the answer, or None."""
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns, sys.executable, "-c", _POLL, url, str(deadline),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return out.decode() if proc.returncode == 0 else None


def _spec(tmp_path: Path, n: int) -> LaunchSpec:
    ip = IPv4Address(f"192.168.127.{n + 1}")
    vm_id = f"{n:02d}{os.urandom(6).hex()}"
    return LaunchSpec(
        vm_id=vm_id,
        name=f"vm{n}",
        cpu_cores=2,
        memory_mb=512,
        run_dir=tmp_path / vm_id,
        log_path=tmp_path / f"{vm_id}.log",
        ip=ip,
        network=NET,
        gateway=IPv4Address("192.168.127.1"),
        mac=mac_for_ip(ip),
        tap=tap_name(vm_id),
    )


@pytest.fixture
async def host(
    netns: str, images: Path, tmp_path: Path
) -> AsyncIterator[tuple[BridgeNetworkManager, QemuHypervisor]]:
    net = BridgeNetworkManager(NET, api_port=7777, netns=netns)
    await net.ensure_bridge()
    hv = QemuHypervisor(QemuOptions(images_dir=images, netns=netns, state_dir=tmp_path))
    try:
        yield net, hv
    finally:
        await net.teardown()


async def _launch(net: BridgeNetworkManager, hv: QemuHypervisor, spec: LaunchSpec) -> QemuVM:
    assert spec.tap is not None
    await net.create_tap(spec.tap)
    vm = await hv.launch(spec)
    assert isinstance(vm, QemuVM)
    return vm


@pytest.mark.vm
async def test_boot_reach_agent_over_bridge_and_destroy(
    e2e: None, netns: str, host: tuple[BridgeNetworkManager, QemuHypervisor], tmp_path: Path
) -> None:
    net, hv = host
    spec = _spec(tmp_path, 1)
    started = time.monotonic()
    vm = await _launch(net, hv, spec)
    try:
        assert await vm.query_status() == "running"
        poll = asyncio.ensure_future(
            get_in_netns(netns, f"{vm.agent_url}/v1/health", READY_DEADLINE)
        )
        died = asyncio.ensure_future(vm.wait())
        done, _ = await asyncio.wait({poll, died}, return_when=asyncio.FIRST_COMPLETED)
        if died in done:
            poll.cancel()
            pytest.fail(f"QEMU exited {died.result()}: {vm.output_tail()}")
        died.cancel()
        answer = poll.result()
        assert answer is not None, f"agent not ready: {vm.output_tail()}"
        assert answer.startswith("200 ")
        print(f"agent healthy {time.monotonic() - started:.1f}s after launch")
        # The serial console went to the VM's log file.
        assert spec.log_path.stat().st_size > 0
    finally:
        t0 = time.monotonic()
        code = await vm.shutdown(timeout=15)
        print(f"shutdown took {time.monotonic() - t0:.1f}s, status {code}")
        assert spec.tap is not None
        await net.delete_tap(spec.tap)
    assert not pid_alive(vm.pid)
    assert await net.list_taps() == []
    assert not (spec.run_dir / "qmp.sock").exists()
    assert netns_pids(netns) == []


async def test_killed_guest_is_noticed_and_adoption(
    netns: str, host: tuple[BridgeNetworkManager, QemuHypervisor], tmp_path: Path
) -> None:
    """Cheap (no wait for the browser): adopt over QMP, then a SIGKILL from outside."""
    net, hv = host
    spec = _spec(tmp_path, 2)
    vm = await _launch(net, hv, spec)
    try:
        vm.detach()  # as a server that exits and leaves the VM running
        await asyncio.sleep(0.1)
        adopted = await hv.adopt(
            AdoptSpec(
                vm_id=spec.vm_id,
                name=spec.name,
                pid=vm.pid,
                command=vm.command,
                run_dir=spec.run_dir,
                log_path=spec.log_path,
                agent_url=vm.agent_url,
                api_socket=vm.api_socket,
            )
        )
        assert isinstance(adopted, QemuVM)
        assert await adopted.query_status() == "running"
        os.kill(vm.pid, signal.SIGKILL)
        assert await asyncio.wait_for(adopted.wait(), 10) == -1  # not reaped by us: unknown
        os.waitpid(vm.pid, 0)  # the test process is still its parent
        assert await adopted.shutdown() == -1
    finally:
        await vm.shutdown(hard=True)
        assert spec.tap is not None
        await net.delete_tap(spec.tap)
    assert not (spec.run_dir / "qmp.sock").exists()
    assert netns_pids(netns) == []


async def test_direct_child_killed_reports_signal(
    netns: str, host: tuple[BridgeNetworkManager, QemuHypervisor], tmp_path: Path
) -> None:
    net, hv = host
    spec = _spec(tmp_path, 3)
    vm = await _launch(net, hv, spec)
    try:
        os.kill(vm.pid, signal.SIGKILL)
        assert await asyncio.wait_for(vm.wait(), 10) == -signal.SIGKILL
        assert vm.returncode == -signal.SIGKILL
    finally:
        await vm.shutdown()
        assert spec.tap is not None
        await net.delete_tap(spec.tap)
