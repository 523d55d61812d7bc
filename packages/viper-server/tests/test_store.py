"""The SQLite store on a real file: migrations, atomic leases, unique live names, events."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from viper_protocol.errors import AlreadyExists, CapacityExhausted
from viper_protocol.models.vms import RuntimeName, VMStatus
from viper_server.store import Store, VMRecord, utcnow

SUBNET = IPv4Network("192.168.127.0/24")


def record(name: str, vm_id: str | None = None) -> VMRecord:
    now = utcnow()
    return VMRecord(
        id=vm_id or f"id-{name}",
        name=name,
        status=VMStatus.PENDING,
        runtime=RuntimeName.QEMU,
        cpu_cores=1,
        memory_mb=512,
        labels={"team": "a"},
        command=["qemu", "-M", "microvm"],
        created_at=now,
        updated_at=now,
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "state.db")
    try:
        yield s
    finally:
        await s.close()


async def test_migrations_applied_once_with_wal(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    first = await Store.open(path)
    assert await first.schema_version() == 1
    await first.close()
    again = await Store.open(path)  # reopening applies nothing twice
    assert await again.schema_version() == 1
    await again.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        versions = db.execute("SELECT version, name FROM schema_version").fetchall()
    assert {"vms", "ip_allocations", "events", "schema_version"} <= tables
    assert versions == [(1, "initial")]


async def test_insert_leases_lowest_free_and_round_trips(store: Store) -> None:
    a = await store.insert_vm(record("a"), lease_from=SUBNET)
    b = await store.insert_vm(record("b"), lease_from=SUBNET)
    assert a.ip_address == IPv4Address("192.168.127.2")  # .1 is the gateway
    assert b.ip_address == IPv4Address("192.168.127.3")
    assert a.mac == "0a:58:c0:a8:7f:02"
    await store.release_ip(a.id)
    c = await store.insert_vm(record("c"), lease_from=SUBNET)
    assert c.ip_address == IPv4Address("192.168.127.2"), "a released address is reused first"
    found = await store.find_vm("b")
    assert found == b
    updated = await store.update_vm(b.id, status=VMStatus.RUNNING, pid=42)
    assert updated.status is VMStatus.RUNNING
    assert updated.pid == 42
    assert updated.labels == {"team": "a"}
    assert updated.command == ["qemu", "-M", "microvm"]


async def test_duplicate_live_name_refused_atomically(store: Store) -> None:
    await store.insert_vm(record("dup", "1"), lease_from=SUBNET)
    with pytest.raises(AlreadyExists):
        await store.insert_vm(record("dup", "2"), lease_from=SUBNET)
    assert list((await store.leases()).values()) == ["1"], "the failed insert leased nothing"
    await store.update_vm("1", deleted_at=utcnow())
    again = await store.insert_vm(record("dup", "3"), lease_from=None)
    assert again.ip_address is None
    assert [r.id for r in await store.list_vms(include_deleted=True)] == ["1", "3"]
    assert [r.id for r in await store.list_vms()] == ["3"]


async def test_exhausted_subnet(store: Store) -> None:
    tiny = IPv4Network("10.0.0.0/30")  # hosts .1 (gateway) and .2
    await store.insert_vm(record("one"), lease_from=tiny)
    with pytest.raises(CapacityExhausted):
        await store.insert_vm(record("two"), lease_from=tiny)
    assert await store.find_vm("two") is None, "no row without its lease"


async def test_concurrent_inserts_from_two_connections(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    s1, s2 = await Store.open(path), await Store.open(path)
    try:
        results = await asyncio.gather(
            *(
                (s1 if i % 2 else s2).insert_vm(record(f"vm{i}"), lease_from=SUBNET)
                for i in range(20)
            )
        )
        assert len({r.ip_address for r in results}) == 20
    finally:
        await s1.close()
        await s2.close()


async def test_events_are_numbered_and_replayed(store: Store) -> None:
    first = await store.append_event("VM_CREATED", "a", VMStatus.PENDING, "created")
    second = await store.append_event("VM_STARTING", "a", VMStatus.STARTING, "", {"x": [1]})
    assert second.id == first.id + 1
    assert await store.last_event_id() == second.id
    assert await store.events_after(first.id) == [second]
    assert await store.events_after(0) == [first, second]


async def test_prune_keeps_the_newest_events(store: Store) -> None:
    for i in range(10):
        await store.append_event("VM_LOG", "a", None, f"line {i}")
    assert await store.prune_events(keep=3) == 7
    remaining = await store.events_after(0)
    assert [e.message for e in remaining] == ["line 7", "line 8", "line 9"]
    assert await store.prune_events(keep=3) == 0
