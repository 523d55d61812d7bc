"""The event bus: filtering, bounded queues that drop instead of blocking, replay from the store."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from viper_protocol.models.events import EventType, VMCreated, VMStarting
from viper_protocol.models.vms import VMStatus
from viper_server.events import EventBus, to_event
from viper_server.store import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "state.db")
    try:
        yield s
    finally:
        await s.close()


async def emit(store: Store, bus: EventBus, type: EventType, vm: str) -> int:
    stored = await store.append_event(str(type), vm, VMStatus.PENDING, "m")
    bus.publish(to_event(stored))
    return stored.id


async def test_filters_by_type_and_vm(store: Store) -> None:
    bus = EventBus(store)
    async with (
        bus.subscribe(types=[EventType.VM_STARTING]) as starting,
        bus.subscribe(vm="b") as only_b,
    ):
        await emit(store, bus, EventType.VM_CREATED, "a")
        await emit(store, bus, EventType.VM_STARTING, "a")
        await emit(store, bus, EventType.VM_CREATED, "b")
        got = await starting.get(timeout=1)
        assert isinstance(got, VMStarting)
        assert got.vm == "a"
        got_b = await only_b.get(timeout=1)
        assert isinstance(got_b, VMCreated)
        assert got_b.vm == "b"
        with pytest.raises(TimeoutError):
            await starting.get(timeout=0.05)
    assert bus.subscriber_count == 0


async def test_slow_subscriber_drops_and_never_blocks(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    bus = EventBus(store)
    async with bus.subscribe(maxsize=2) as slow, bus.subscribe() as fast:
        with caplog.at_level(logging.WARNING):
            for _ in range(5):
                await emit(store, bus, EventType.VM_CREATED, "x")  # never waits on `slow`
        assert slow.dropped == 3
        assert "slow event subscriber" in caplog.text
        fast_ids = [(await fast.get(timeout=1)).id for _ in range(5)]
        slow_ids = [(await slow.get(timeout=1)).id for _ in range(2)]
        assert slow_ids == fast_ids[:2]


async def test_replay_after_id_then_live_without_gaps_or_duplicates(store: Store) -> None:
    bus = EventBus(store)
    ids = [await emit(store, bus, EventType.VM_CREATED, f"v{i}") for i in range(4)]
    async with bus.subscribe(after_id=ids[1]) as sub:
        live = await emit(store, bus, EventType.VM_STARTING, "v9")
        got = [(await sub.get(timeout=1)).id for _ in range(3)]
        assert got == [ids[2], ids[3], live]
        with pytest.raises(TimeoutError):
            await sub.get(timeout=0.05)


async def test_close_ends_iteration(store: Store) -> None:
    bus = EventBus(store)
    seen = []

    async def consume() -> None:
        async with bus.subscribe() as sub:
            async for event in sub:
                seen.append(event.id)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    await emit(store, bus, EventType.VM_CREATED, "z")
    await asyncio.sleep(0.01)
    bus.close()
    await asyncio.wait_for(task, 1)
    assert len(seen) == 1
