"""The engine's state machine with the `sleep` runtime double: sequences, concurrency, rollback."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from ipaddress import IPv4Address

import pytest

from viper_protocol.errors import (
    AlreadyExists,
    CapacityExhausted,
    InvalidState,
    LaunchFailed,
    NotFound,
    ValidationFailed,
)
from viper_protocol.models.events import Event, EventType
from viper_protocol.models.vms import CreateVMRequest, RuntimeName, VMStatus
from viper_server.hypervisors.hostproc import pid_alive
from viper_server.orchestrator import Engine

from .conftest import FakeNetwork, SleepRuntime, StandInAgent, wait_until


async def collect(sub: object, until: EventType, timeout: float = 10.0) -> list[Event]:
    """Events from a subscription up to and including the first of type `until`."""
    seen: list[Event] = []
    async with asyncio.timeout(timeout):
        async for event in sub:  # type: ignore[attr-defined]
            seen.append(event)
            if event.type is until:
                return seen
    return seen


async def test_create_run_delete_sequence_and_nothing_left(
    double_engine: Engine, fake_network: FakeNetwork, sleep_runtime: SleepRuntime
) -> None:
    engine = double_engine
    async with engine.bus.subscribe(vm="alpha") as sub:
        vm = await engine.create_vm(CreateVMRequest(name="alpha"), wait=True)
        assert vm.status is VMStatus.RUNNING
        assert vm.ip == IPv4Address("192.168.127.2")
        assert vm.mac == "0a:58:c0:a8:7f:02"
        assert vm.devtools is not None
        assert vm.devtools.http_url == "http://127.0.0.1:17777/api/v1/vms/alpha/cdp"
        assert vm.devtools.websocket_url.endswith("/api/v1/vms/alpha/cdp/devtools/browser/abc")
        assert await engine.agent_url("alpha") == sleep_runtime.agent_url
        assert fake_network.taps == {f"vtap-{vm.id[:9]}"}
        pid = vm.pid
        assert pid is not None
        assert pid_alive(pid)
        run_dir = engine.config.run_root / vm.id
        assert run_dir.is_dir()

        final = await engine.delete_vm("alpha")
        events = await collect(sub, EventType.VM_DELETED)

    assert [(e.type, e.status) for e in events] == [
        (EventType.VM_CREATED, VMStatus.PENDING),
        (EventType.VM_STARTING, VMStatus.STARTING),
        (EventType.VM_RUNNING, VMStatus.RUNNING),
        (EventType.VM_STOPPING, VMStatus.STOPPING),
        (EventType.VM_STOPPED, VMStatus.STOPPED),
        (EventType.VM_DELETED, VMStatus.STOPPED),
    ]
    ids = [e.id for e in events]
    assert ids == sorted(ids)
    assert final.status is VMStatus.STOPPED
    assert not pid_alive(pid)
    assert not run_dir.exists()
    assert not (engine.config.logs_dir / f"{vm.id}.log").exists()
    assert await engine.store.leases() == {}
    assert fake_network.taps == set()
    assert await engine.list_vms() == []
    row = await engine.store.get_vm(vm.id)
    assert row is not None
    assert row.deleted_at is not None
    # The name is free again, and the lowest address with it.
    again = await engine.create_vm(CreateVMRequest(name="alpha"), wait=True)
    assert again.ip == IPv4Address("192.168.127.2")


async def test_twenty_concurrent_creates_get_distinct_ips(double_engine: Engine) -> None:
    engine = double_engine
    vms = await asyncio.gather(
        *(engine.create_vm(CreateVMRequest(name=f"vm-{i}")) for i in range(20))
    )
    ips = {vm.ip for vm in vms}
    assert len(ips) == 20
    assert ips == {IPv4Address(f"192.168.127.{i}") for i in range(2, 22)}
    leases = await engine.store.leases()
    assert set(leases) == ips
    await asyncio.gather(*(engine.delete_vm(vm.name) for vm in vms))
    assert await engine.store.leases() == {}


async def test_concurrent_duplicate_names_one_wins(double_engine: Engine) -> None:
    engine = double_engine
    results = await asyncio.gather(
        *(engine.create_vm(CreateVMRequest(name="same")) for _ in range(8)),
        return_exceptions=True,
    )
    ok = [r for r in results if not isinstance(r, BaseException)]
    dup = [r for r in results if isinstance(r, AlreadyExists)]
    assert len(ok) == 1
    assert len(dup) == 7
    assert len(await engine.store.leases()) == 1


async def test_ip_pool_exhaustion_is_capacity_exhausted(
    double_engine: Engine, fake_network: FakeNetwork
) -> None:
    import attrs

    engine = double_engine
    # A /29 has 6 hosts; minus the gateway, 5 leases.
    engine.config = attrs.evolve(engine.config, subnet="10.9.9.0/29")
    for i in range(5):
        await engine.create_vm(CreateVMRequest(name=f"p{i}"))
    with pytest.raises(CapacityExhausted):
        await engine.create_vm(CreateVMRequest(name="p5"))
    assert [vm.name for vm in await engine.list_vms()] == [f"p{i}" for i in range(5)]


@pytest.mark.parametrize("step", ["tap", "launch"])
async def test_failed_launch_rolls_back_everything(
    double_engine: Engine, fake_network: FakeNetwork, sleep_runtime: SleepRuntime, step: str
) -> None:
    engine = double_engine
    if step == "tap":
        fake_network.fail_create = True
    else:
        sleep_runtime.fail_launch = True
    async with engine.bus.subscribe(vm="broken") as sub:
        with pytest.raises((LaunchFailed, OSError)):
            await engine.create_vm(CreateVMRequest(name="broken"))
        events = await collect(sub, EventType.VM_DELETED)
    assert [e.type for e in events] == [
        EventType.VM_CREATED,
        EventType.VM_STARTING,
        EventType.VM_CRASHED,
        EventType.VM_DELETED,
    ]
    assert await engine.store.leases() == {}
    assert fake_network.taps == set()
    assert list(engine.config.run_root.iterdir()) == []
    assert list(engine.config.logs_dir.iterdir()) == []
    assert await engine.list_vms() == []
    assert engine.metrics.create_failures == 1


async def test_readiness_timeout_fails_wait_and_leaves_nothing(
    double_engine: Engine, stand_in_agent: StandInAgent, sleep_runtime: SleepRuntime
) -> None:
    stand_in_agent.browser_status = "starting"
    engine = double_engine
    with pytest.raises(LaunchFailed, match="not ready within"):
        await engine.create_vm(CreateVMRequest(name="slow"), wait=True)
    assert stand_in_agent.health_calls > 1
    assert not any(pid_alive(p) for p in sleep_runtime.pids)
    assert await engine.store.leases() == {}
    assert await engine.list_vms() == []


async def test_process_exit_is_a_crash_within_a_second(
    double_engine: Engine, fake_network: FakeNetwork
) -> None:
    engine = double_engine
    vm = await engine.create_vm(CreateVMRequest(name="victim"), wait=True)
    assert vm.pid is not None
    async with engine.bus.subscribe(types=[EventType.VM_CRASHED]) as sub:
        os.kill(vm.pid, signal.SIGKILL)
        killed = time.monotonic()
        event = await sub.get(timeout=2.0)
    # Noticed through a pidfd, not by polling: well within a second even on a busy host.
    assert time.monotonic() - killed < 1.0
    assert event.vm == "victim"
    assert event.data["exit_code"] == -signal.SIGKILL
    crashed = await engine.get_vm("victim")
    assert crashed.status is VMStatus.CRASHED
    assert crashed.exit_code == -signal.SIGKILL
    assert await engine.store.leases() == {}
    assert fake_network.taps == set()
    with pytest.raises(InvalidState):
        await engine.agent_url("victim")
    final = await engine.delete_vm("victim")
    assert final.status is VMStatus.CRASHED
    assert await engine.list_vms() == []


async def test_ttl_expiry_destroys(double_engine: Engine) -> None:
    engine = double_engine
    vm = await engine.create_vm(CreateVMRequest(name="short", ttl_seconds=1), wait=True)
    assert vm.expires_at is not None
    async with engine.bus.subscribe(types=[EventType.VM_DELETED], vm="short") as sub:
        event = await sub.get(timeout=5.0)
    assert "ttl" in event.message
    assert await engine.list_vms() == []
    assert await engine.store.leases() == {}
    assert vm.pid is not None
    assert not pid_alive(vm.pid)


async def test_idle_timeout_destroys_and_touch_postpones(double_engine: Engine) -> None:
    engine = double_engine
    await engine.create_vm(CreateVMRequest(name="idle", idle_timeout_seconds=2), wait=True)
    for _ in range(15):  # 3 s of activity keeps it alive past its 2 s idle timeout
        engine.touch("idle")
        await asyncio.sleep(0.2)
    assert (await engine.get_vm("idle")).status is VMStatus.RUNNING
    await wait_until(lambda: "idle" not in engine._vms, timeout=5.0)
    assert await engine.list_vms() == []


async def test_delete_while_starting(double_engine: Engine, stand_in_agent: StandInAgent) -> None:
    stand_in_agent.browser_status = "starting"
    engine = double_engine
    vm = await engine.create_vm(CreateVMRequest(name="early"))
    assert vm.status is VMStatus.STARTING
    final = await engine.delete_vm("early")
    assert final.status is VMStatus.STOPPED
    assert await engine.store.leases() == {}


async def test_browser_down_for_good_is_a_crash(
    double_engine: Engine, stand_in_agent: StandInAgent
) -> None:
    engine = double_engine
    await engine.create_vm(CreateVMRequest(name="flaky"), wait=True)
    async with engine.bus.subscribe(types=[EventType.VM_CRASHED], vm="flaky") as sub:
        stand_in_agent.browser_status = "crashed"
        event = await sub.get(timeout=5.0)
    assert "Chromium crashed" in event.message
    assert (await engine.get_vm("flaky")).status is VMStatus.CRASHED
    assert await engine.store.leases() == {}


async def test_cancelled_create_leaves_nothing(
    double_engine: Engine, sleep_runtime: SleepRuntime, fake_network: FakeNetwork
) -> None:
    engine = double_engine
    sleep_runtime.launch_delay = 5.0
    task = asyncio.create_task(engine.create_vm(CreateVMRequest(name="abandoned")))
    await wait_until(lambda: bool(fake_network.created), timeout=5.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await engine.list_vms() == []
    assert await engine.store.leases() == {}
    assert fake_network.taps == set()
    assert list(engine.config.run_root.iterdir()) == []


async def test_unknown_names_and_unusable_runtimes_are_refused(double_engine: Engine) -> None:
    engine = double_engine
    with pytest.raises(NotFound):
        await engine.get_vm("nope")
    with pytest.raises(NotFound):
        await engine.delete_vm("nope")
    with pytest.raises(NotFound):
        await engine.agent_url("nope")
    engine.touch("nope")  # activity on an unknown VM is ignored
    with pytest.raises(ValidationFailed, match="cloud-hypervisor is not installed"):
        await engine.create_vm(CreateVMRequest(name="x", runtime=RuntimeName.CLOUD_HYPERVISOR))
    assert await engine.list_vms() == []
    assert engine.metrics.creates == 0


async def test_max_vms_under_concurrency(double_engine: Engine) -> None:
    import attrs

    engine = double_engine
    engine.config = attrs.evolve(engine.config, max_vms=3)
    results = await asyncio.gather(
        *(engine.create_vm(CreateVMRequest(name=f"m{i}")) for i in range(6)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 3
    assert sum(isinstance(r, CapacityExhausted) for r in results) == 3
    counts = await engine.status_counts()
    assert sum(counts.values()) == 3


async def test_system_info(double_engine: Engine) -> None:
    engine = double_engine
    await engine.create_vm(CreateVMRequest(name="counted"), wait=True)
    info = await engine.system_info()
    by_name = {r.name: r for r in info.runtimes}
    assert by_name[RuntimeName.QEMU].available is True
    assert by_name[RuntimeName.PROCESS].available is False  # not in this engine
    assert info.default_runtime is RuntimeName.QEMU
    assert info.image.present is False
    assert info.capacity.vms_running == 1
    assert info.capacity.ips_free == 252  # 254 hosts, minus the gateway, minus one lease
    assert info.auth_required is False
    assert info.kvm.accel in ("kvm", "tcg")
