"""Reconcile at start with the runtime doubles: adopt, mark crashed, free leaked things."""

from __future__ import annotations

import os
import signal
from ipaddress import IPv4Address

import attrs

from viper_protocol.models.events import EventType
from viper_protocol.models.vms import CreateVMRequest, RuntimeName, VMStatus
from viper_server.config import ServerConfig
from viper_server.hypervisors.hostproc import pid_alive, spawn
from viper_server.orchestrator import Engine
from viper_server.store import Store, utcnow

from .conftest import SLEEP, FakeNetwork, SleepRuntime, kill_quietly, wait_until


def make_engine(config: ServerConfig, runtime: SleepRuntime, network: FakeNetwork) -> Engine:
    cfg = attrs.evolve(config, runtime="qemu", stop_vms_on_exit=False)
    return Engine(cfg, hypervisors={RuntimeName.QEMU: runtime}, network=network)


async def test_restart_adopts_live_marks_dead_and_frees_leaks(
    config: ServerConfig, sleep_runtime: SleepRuntime, fake_network: FakeNetwork
) -> None:
    first = make_engine(config, sleep_runtime, fake_network)
    await first.start()
    live = await first.create_vm(CreateVMRequest(name="live"), wait=True)
    dead = await first.create_vm(CreateVMRequest(name="dead"), wait=True)
    reused = await first.create_vm(CreateVMRequest(name="reused"), wait=True)
    await first.close()  # leaves the three `sleep`s running, as a server exit does
    assert live.pid is not None
    assert dead.pid is not None
    assert reused.pid is not None
    assert pid_alive(live.pid)

    os.kill(dead.pid, signal.SIGKILL)
    await wait_until(lambda: not pid_alive(dead.pid))
    # "reused": its PID now runs something else (another command line) -- never touch it.
    stranger = spawn([SLEEP, "3599"], log_path=config.state_dir / "stranger.log")
    store = await Store.open(config.db_path)
    try:
        await store.update_vm(reused.id, pid=stranger)
        # Leaks from a crash: a lease, a run dir and a log of no VM; a tap of no VM; a row
        # that never got launched.
        now = utcnow()
        template = await store.find_vm("live")
        assert template is not None
        pending = attrs.evolve(
            template,
            id="pendingid",
            name="pending",
            status=VMStatus.PENDING,
            pid=None,
            run_dir=config.run_root / "pendingid",
            log_path=config.logs_dir / "pendingid.log",
            created_at=now,
        )
        await store.insert_vm(pending, lease_from=config.subnet)
        await store.insert_vm(
            attrs.evolve(
                pending,
                id="ghostid",
                name="ghost",
                deleted_at=now,
                run_dir=config.run_root / "ghostid",
                log_path=config.logs_dir / "ghostid.log",
            ),
            lease_from=config.subnet,
        )
    finally:
        await store.close()
    (config.run_root / "ghostid").mkdir()
    (config.logs_dir / "ghostid.log").write_text("x")
    fake_network.taps.add("vtap-ghostid00")

    second = make_engine(config, sleep_runtime, fake_network)
    await second.start()
    try:
        vms = {vm.name: vm for vm in await second.list_vms()}
        assert vms["live"].status is VMStatus.RUNNING
        assert vms["dead"].status is VMStatus.CRASHED
        assert vms["reused"].status is VMStatus.CRASHED
        assert vms["pending"].status is VMStatus.CRASHED
        assert pid_alive(stranger), "a reused PID is never signalled"
        assert second.metrics.adopted == 1
        leases = await second.store.leases()
        assert leases == {IPv4Address("192.168.127.2"): live.id}
        assert fake_network.taps == {f"vtap-{live.id[:9]}"}
        assert sorted(p.name for p in config.run_root.iterdir()) == [live.id]
        assert sorted(p.name for p in config.logs_dir.iterdir()) == [f"{live.id}.log"]
        crashed = {e.vm for e in await second.bus.replay(0) if e.type is EventType.VM_CRASHED}
        assert crashed == {"dead", "reused", "pending"}
        # The adopted VM is supervised: its exit is a crash, noticed at once.
        async with second.bus.subscribe(types=[EventType.VM_CRASHED]) as crashes:
            os.kill(live.pid, signal.SIGKILL)
            event = await crashes.get(timeout=1.0)
        assert event.vm == "live"
        assert await second.store.leases() == {}
    finally:
        await second.close()
        kill_quietly(stranger)
