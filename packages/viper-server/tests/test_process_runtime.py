"""The real path: the `process` runtime with the real `viper-agent` and real Chromium.

Covers create -> running -> delete leaving nothing behind, an agent crash reported as
`crashed`, and a server killed with SIGKILL whose VMs the next engine adopts or marks crashed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest

from viper_protocol.errors import LaunchFailed
from viper_protocol.models.browser import BrowserStatus
from viper_protocol.models.events import EventType
from viper_protocol.models.vms import CreateVMRequest, RuntimeName, VMStatus
from viper_server.config import ServerConfig
from viper_server.hypervisors.hostproc import pid_alive
from viper_server.orchestrator import Engine

from .conftest import kill_quietly, needs_agent, wait_until

pytestmark = [needs_agent, pytest.mark.timeout(120)]


@pytest.fixture
async def engine(config: ServerConfig) -> AsyncIterator[Engine]:
    """An engine with the real runtimes; every VM is destroyed at the end."""
    engine = Engine(attrs.evolve(config, stop_vms_on_exit=True))
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()


async def test_create_running_delete_leaves_nothing(engine: Engine) -> None:
    assert engine.default_runtime is RuntimeName.PROCESS
    lifecycle = [t for t in EventType if t is not EventType.VM_LOG]
    async with engine.bus.subscribe(types=lifecycle, vm="real") as sub:
        vm = await engine.create_vm(CreateVMRequest(name="real"), wait=True)
        assert vm.status is VMStatus.RUNNING
        assert vm.runtime is RuntimeName.PROCESS
        assert vm.isolated is False
        assert vm.ip is None  # the process runtime leases no address
        assert vm.devtools is not None
        assert vm.devtools.browser.startswith(("Chrome", "HeadlessChrome"))
        url = await engine.agent_url("real")
        assert url.startswith("http://127.0.0.1:")
        health = await engine.agent.health(url)
        assert health.browser.status is BrowserStatus.RUNNING
        chromium_pid = health.browser.pid
        assert vm.pid is not None
        assert chromium_pid is not None
        run_dir = engine.config.run_root / vm.id
        tmp_dir = Path(tempfile.gettempdir()) / f"viper-{vm.id[:16]}"
        assert any(tmp_dir.iterdir()), "the browser profile lives in the VM's temp dir"

        final = await engine.delete_vm("real")
        types = []
        async for event in sub:
            types.append(event.type)
            if event.type is EventType.VM_DELETED:
                break
    assert types == [
        EventType.VM_CREATED,
        EventType.VM_STARTING,
        EventType.VM_RUNNING,
        EventType.VM_STOPPING,
        EventType.VM_STOPPED,
        EventType.VM_DELETED,
    ]
    assert final.status is VMStatus.STOPPED
    assert final.exit_code == 0, "SIGTERM stops the agent gracefully"
    assert not pid_alive(vm.pid)
    await wait_until(lambda: not pid_alive(chromium_pid), timeout=5)
    assert not run_dir.exists()
    assert not tmp_dir.exists()
    assert list(engine.config.logs_dir.iterdir()) == []
    assert await engine.list_vms() == []


async def test_agent_kill_is_reported_crashed(engine: Engine) -> None:
    vm = await engine.create_vm(CreateVMRequest(name="fragile"), wait=True)
    assert vm.pid is not None
    health = await engine.agent.health(await engine.agent_url("fragile"))
    chromium_pid = health.browser.pid
    assert chromium_pid is not None
    async with engine.bus.subscribe(types=[EventType.VM_CRASHED], vm="fragile") as sub:
        os.kill(vm.pid, signal.SIGKILL)
        event = await sub.get(timeout=2.0)
    assert event.data["exit_code"] == -signal.SIGKILL
    assert isinstance(event.data["output_tail"], list)
    assert event.data["output_tail"], "the agent's last log lines are kept"
    crashed = await engine.get_vm("fragile")
    assert crashed.status is VMStatus.CRASHED
    assert crashed.exit_code == -signal.SIGKILL
    await wait_until(lambda: not pid_alive(chromium_pid), timeout=5)
    assert not (engine.config.run_root / vm.id).exists()
    await engine.delete_vm("fragile")


async def test_broken_browser_fails_the_create_with_the_agents_output(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIPER_AGENT_CHROMIUM", "/bin/false")  # inherited by the agent
    with pytest.raises(LaunchFailed) as caught:
        await engine.create_vm(CreateVMRequest(name="nobrowser"), wait=True)
    details = caught.value.details
    assert details["exit_code"] == 1
    assert any("Chromium" in str(line) for line in details["output_tail"])  # type: ignore[union-attr]
    assert await engine.list_vms() == []
    assert list(engine.config.run_root.iterdir()) == []


async def test_agent_output_becomes_vm_log_events(engine: Engine) -> None:
    async with engine.bus.subscribe(types=[EventType.VM_LOG], vm="chatty") as sub:
        await engine.create_vm(CreateVMRequest(name="chatty"), wait=True)
        async with asyncio.timeout(10):
            async for event in sub:
                assert event.data["stream"] == "console"
                if "viper-agent" in str(event.data["line"]):
                    break


async def test_chromium_crash_is_reported_as_crashed(engine: Engine) -> None:
    vm = await engine.create_vm(CreateVMRequest(name="phoenix"), wait=True)
    health = await engine.agent.health(await engine.agent_url("phoenix"))
    chromium_pid = health.browser.pid
    assert chromium_pid is not None
    async with engine.bus.subscribe(types=[EventType.VM_CRASHED], vm="phoenix") as sub:
        os.kill(chromium_pid, signal.SIGKILL)
        async with asyncio.timeout(10):
            event = await anext(aiter(sub))
    assert "Chromium crashed" in event.message
    assert "the browser session is lost" in event.message
    crashed = await engine.get_vm("phoenix")
    assert crashed.status is VMStatus.CRASHED
    # Nothing of the VM is left running: the agent (and the Chromium it restarted) are gone.
    assert vm.pid is not None
    async with asyncio.timeout(10):
        while _alive(vm.pid):
            await asyncio.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    from viper_protocol.models.vms import CreateVMRequest
    from viper_server.config import ServerConfig
    from viper_server.orchestrator import Engine

    async def main() -> None:
        engine = Engine(ServerConfig(state_dir=sys.argv[1], runtime="process", port=17778))
        await engine.start()
        vms = [
            await engine.create_vm(CreateVMRequest(name=name), wait=True)
            for name in ("keep", "lose")
        ]
        starting = await engine.create_vm(CreateVMRequest(name="pending-ish"))
        print(json.dumps({vm.name: vm.pid for vm in [*vms, starting]}), flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def test_server_sigkill_then_adopt_or_crash(config: ServerConfig, tmp_path: Path) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(config.state_dir),
        stdout=asyncio.subprocess.PIPE,
    )
    pids: dict[str, int] = {}
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 90)
        pids = json.loads(line)
        assert set(pids) == {"keep", "lose", "pending-ish"}
        child.kill()  # SIGKILL: no cleanup of any kind
        await child.wait()
        os.kill(pids["lose"], signal.SIGKILL)  # this one dies while no server watches
        await wait_until(lambda: not pid_alive(pids["lose"]), timeout=5)

        engine = Engine(attrs.evolve(config, stop_vms_on_exit=False))
        await engine.start()
        try:
            by_name = {vm.name: vm for vm in await engine.list_vms()}
            assert by_name["keep"].status is VMStatus.RUNNING
            assert by_name["lose"].status is VMStatus.CRASHED
            assert "gone" in (by_name["lose"].message or "")
            assert engine.metrics.adopted == 2
            # The adopted agent answers through the new engine.
            health = await engine.agent.health(await engine.agent_url("keep"))
            assert health.browser.status is BrowserStatus.RUNNING
            # The one that was still starting finishes starting under the new engine.
            await wait_until(lambda: engine._vms["pending-ish"].status is VMStatus.RUNNING, 30)
            lost_dir = engine.config.run_root / by_name["lose"].id
            assert not lost_dir.exists()
            # An adopted process (not our child) that dies is still noticed at once.
            async with engine.bus.subscribe(types=[EventType.VM_CRASHED]) as sub:
                os.kill(pids["pending-ish"], signal.SIGKILL)
                event = await sub.get(timeout=2.0)
            assert event.vm == "pending-ish"
            assert event.data["exit_code"] is None  # not our child: the status is unknown
            # Deleting an adopted VM stops its process.
            await engine.delete_vm("keep")
            assert not pid_alive(pids["keep"])
            for name in ("lose", "pending-ish"):
                await engine.delete_vm(name)
            assert await engine.list_vms() == []
            assert list(engine.config.run_root.iterdir()) == []
            assert list(engine.config.logs_dir.iterdir()) == []
            assert await engine.store.leases() == {}
            tmp = Path(tempfile.gettempdir())
            for vm in by_name.values():
                assert not (tmp / f"viper-{vm.id[:16]}").exists()
            for pid in pids.values():
                assert not pid_alive(pid)
        finally:
            await engine.close()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        for pid in pids.values():
            kill_quietly(pid)


async def test_agent_tmp_dir_is_removed_even_while_something_still_writes(tmp_path: Path) -> None:
    from viper_server.hypervisors.process import remove_tmp_dir

    target = tmp_path / "viper-0123456789abcdef"
    profile = target / "viper-agent-profile-x"
    profile.mkdir(parents=True)
    stop = asyncio.Event()

    async def writer() -> None:
        # Like a Chromium that outlives its agent for a moment: it recreates files in its
        # profile, then exits and removes its own lock file.
        n = 0
        while not stop.is_set():
            with contextlib.suppress(OSError):  # fails once the profile dir is gone
                (profile / f"f{n}").write_text("x")
            n += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(writer())
    loop = asyncio.get_running_loop()
    loop.call_later(0.5, stop.set)
    await remove_tmp_dir(target, attempts=30, pause=0.1)
    await task
    assert not target.exists()
