"""The SQLite store: schema migrations, VM rows, IP leases and the event log.

One aiosqlite connection in WAL mode, in autocommit so that transactions are explicit. An
`asyncio.Lock` serialises every use of the connection, so the statements of one transaction
never interleave with another coroutine's; `BEGIN IMMEDIATE` additionally takes SQLite's write
lock at the start, so a second process on the same file cannot race a lease either.
Migrations are the package-data files `migrations/NNN_name.sql`, applied in order at open and
recorded in `schema_version`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib import resources
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import aiosqlite
import attrs

from viper_protocol.errors import AlreadyExists, CapacityExhausted, NotFound
from viper_protocol.models.common import JSONObject
from viper_protocol.models.vms import RuntimeName, VMStatus
from viper_server.network.base import mac_for_ip
from viper_server.store.records import StoredEvent, VMRecord

logger = logging.getLogger(__name__)

FINAL_STATUSES = tuple(str(s) for s in VMStatus if s.is_final)

# How each VMRecord field is stored: JSON text, a timestamp, a path, an address, or as is.
_JSON_FIELDS = frozenset({"labels", "command", "devtools"})
_TIME_FIELDS = frozenset(
    {"expires_at", "created_at", "updated_at", "started_at", "stopped_at", "deleted_at"}
)
_PATH_FIELDS = frozenset({"run_dir", "log_path", "api_socket"})
_VM_COLUMNS = tuple(f.name for f in attrs.fields(VMRecord))


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def _to_column(field: str, value: object) -> object:
    if value is None:
        return None
    if field in _JSON_FIELDS:
        return json.dumps(value, separators=(",", ":"))
    if field in _TIME_FIELDS:
        assert isinstance(value, datetime)
        return value.isoformat()
    if field in _PATH_FIELDS or field in ("ip_address", "status", "runtime"):
        return str(value)
    return value


def _from_row(row: sqlite3.Row) -> VMRecord:
    values: dict[str, Any] = {}
    for field in _VM_COLUMNS:
        raw = row[field]
        if raw is None:
            values[field] = None if field != "labels" else {}
        elif field in _JSON_FIELDS:
            values[field] = json.loads(raw)
        elif field in _TIME_FIELDS:
            values[field] = datetime.fromisoformat(raw)
        elif field in _PATH_FIELDS:
            values[field] = Path(raw)
        elif field == "ip_address":
            values[field] = IPv4Address(raw)
        elif field == "status":
            values[field] = VMStatus(raw)
        elif field == "runtime":
            values[field] = RuntimeName(raw)
        else:
            values[field] = raw
    return VMRecord(**values)


def _event_from_row(row: sqlite3.Row) -> StoredEvent:
    return StoredEvent(
        id=row["id"],
        type=row["type"],
        vm=row["vm"],
        status=VMStatus(row["status"]) if row["status"] else None,
        message=row["message"],
        timestamp=datetime.fromisoformat(row["timestamp"]),
        data=json.loads(row["data"]),
    )


def _migrations() -> list[tuple[int, str, str]]:
    """The packaged migrations as (version, name, SQL), in version order."""
    found = []
    for entry in resources.files("viper_server.store").joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append((int(number), rest.removesuffix(".sql"), entry.read_text("utf-8")))
    return sorted(found)


class Store:
    """All persistent state. Create with `await Store.open(path)`; `await close()` at the end."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self._lock = asyncio.Lock()
        self.path = path

    @classmethod
    async def open(cls, path: Path) -> Store:
        """Open (creating if needed) the database at `path` and apply pending migrations."""
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            db.row_factory = sqlite3.Row
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute("PRAGMA busy_timeout=5000")
            await db.execute("PRAGMA foreign_keys=ON")
            store = cls(db, path)
            await store._migrate()
        except BaseException:
            await db.close()
            raise
        return store

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        async with self._lock:
            await self._db.close()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    async def _migrate(self) -> None:
        async with self._transaction() as db:
            await db.execute(
                "CREATE TABLE IF NOT EXISTS schema_version"
                " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            async with db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version") as cur:
                row = await cur.fetchone()
            current = int(row[0]) if row else 0
            for version, name, sql in _migrations():
                if version <= current:
                    continue
                logger.info("applying migration %03d_%s to %s", version, name, self.path)
                for statement in _statements(sql):
                    await db.execute(statement)
                await db.execute(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                    (version, name, utcnow().isoformat()),
                )

    async def schema_version(self) -> int:
        """The highest applied migration."""
        async with self._lock, self._db.execute("SELECT MAX(version) FROM schema_version") as c:
            row = await c.fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    # --- VMs ------------------------------------------------------------------------------

    async def insert_vm(self, record: VMRecord, *, lease_from: IPv4Network | None) -> VMRecord:
        """Insert a new VM row and, with `lease_from`, lease it the lowest free IP, atomically.

        The first host of the subnet is the gateway and is never leased.

        Raises:
            AlreadyExists: a VM that is not deleted has this name.
            CapacityExhausted: `lease_from` has no free address left.
        """
        async with self._transaction() as db:
            ip = await self._lowest_free_ip(db, lease_from) if lease_from is not None else None
            if ip is not None:
                record = attrs.evolve(record, ip_address=ip, mac=mac_for_ip(ip))
            columns = ", ".join(_VM_COLUMNS)
            marks = ", ".join("?" for _ in _VM_COLUMNS)
            try:
                await db.execute(
                    f"INSERT INTO vms ({columns}) VALUES ({marks})",  # noqa: S608 (fixed names)
                    [_to_column(f, getattr(record, f)) for f in _VM_COLUMNS],
                )
            except sqlite3.IntegrityError as exc:
                raise AlreadyExists(
                    f"a VM named {record.name!r} already exists", {"name": record.name}
                ) from exc
            if lease_from is not None:
                if ip is None:
                    raise CapacityExhausted(
                        f"no free IP address left in {lease_from}",
                        {"subnet": str(lease_from)},
                    )
                await db.execute(
                    "INSERT INTO ip_allocations (ip_address, status, vm_id, leased_at)"
                    " VALUES (?, 'leased', ?, ?)",
                    (str(ip), record.id, utcnow().isoformat()),
                )
        return record

    @staticmethod
    async def _lowest_free_ip(db: aiosqlite.Connection, subnet: IPv4Network) -> IPv4Address | None:
        async with db.execute("SELECT ip_address FROM ip_allocations") as cur:
            leased = {row[0] for row in await cur.fetchall()}
        gateway = next(subnet.hosts(), None)
        for ip in subnet.hosts():
            if ip != gateway and str(ip) not in leased:
                return ip
        return None

    async def update_vm(self, vm_id: str, **changes: object) -> VMRecord:
        """Change some fields of a VM row (and `updated_at`); returns the new row.

        Raises:
            NotFound: no row has this id.
        """
        changes["updated_at"] = utcnow()
        unknown = set(changes) - set(_VM_COLUMNS)
        if unknown:
            raise ValueError(f"unknown VM fields: {sorted(unknown)}")
        sets = ", ".join(f"{name} = ?" for name in changes)
        params = [_to_column(k, v) for k, v in changes.items()] + [vm_id]
        async with self._transaction() as db:
            await db.execute(f"UPDATE vms SET {sets} WHERE id = ?", params)  # noqa: S608
            async with db.execute("SELECT * FROM vms WHERE id = ?", (vm_id,)) as cur:
                row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no VM with id {vm_id!r}", {"id": vm_id})
        return _from_row(row)

    async def get_vm(self, vm_id: str) -> VMRecord | None:
        """The row with this id (deleted or not), or None."""
        rows = await self._fetch("SELECT * FROM vms WHERE id = ?", (vm_id,))
        return _from_row(rows[0]) if rows else None

    async def find_vm(self, name: str) -> VMRecord | None:
        """The VM with this name that has not been deleted, or None."""
        rows = await self._fetch("SELECT * FROM vms WHERE name = ? AND deleted_at IS NULL", (name,))
        return _from_row(rows[0]) if rows else None

    async def list_vms(
        self, status: VMStatus | None = None, *, include_deleted: bool = False
    ) -> list[VMRecord]:
        """VMs in creation order, optionally of one status; deleted ones only if asked."""
        where, params = [], []
        if not include_deleted:
            where.append("deleted_at IS NULL")
        if status is not None:
            where.append("status = ?")
            params.append(str(status))
        sql = "SELECT * FROM vms"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = await self._fetch(sql + " ORDER BY created_at, rowid", params)
        return [_from_row(r) for r in rows]

    async def live_vms(self) -> list[VMRecord]:
        """VMs that are neither deleted nor in a final status (what may still have a process)."""
        rows = await self._fetch(
            "SELECT * FROM vms WHERE deleted_at IS NULL AND status NOT IN (?, ?)"
            " ORDER BY created_at, rowid",
            FINAL_STATUSES,
        )
        return [_from_row(r) for r in rows]

    # --- IP leases ------------------------------------------------------------------------

    async def release_ip(self, vm_id: str) -> None:
        """Release every lease of this VM (idempotent)."""
        async with self._transaction() as db:
            await db.execute("DELETE FROM ip_allocations WHERE vm_id = ?", (vm_id,))

    async def leases(self) -> dict[IPv4Address, str]:
        """Every leased address and the id of the VM holding it."""
        rows = await self._fetch("SELECT ip_address, vm_id FROM ip_allocations", ())
        return {IPv4Address(r["ip_address"]): r["vm_id"] for r in rows}

    # --- events ---------------------------------------------------------------------------

    async def append_event(
        self,
        type: str,
        vm: str,
        status: VMStatus | None,
        message: str = "",
        data: JSONObject | None = None,
    ) -> StoredEvent:
        """Store an event and return it with its sequence number (the SSE `id`)."""
        (stored,) = await self.append_events([(type, vm, status, message, data)])
        return stored

    async def append_events(
        self, events: list[tuple[str, str, VMStatus | None, str, JSONObject | None]]
    ) -> list[StoredEvent]:
        """Store several events (type, vm, status, message, data) in one transaction."""
        timestamp = utcnow()
        stored: list[StoredEvent] = []
        async with self._transaction() as db:
            for type, vm, status, message, data in events:
                payload = dict(data or {})
                cur = await db.execute(
                    "INSERT INTO events (type, vm, status, message, timestamp, data)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        type,
                        vm,
                        str(status) if status else None,
                        message,
                        timestamp.isoformat(),
                        json.dumps(payload, separators=(",", ":")),
                    ),
                )
                event_id = cur.lastrowid
                await cur.close()
                assert event_id is not None
                stored.append(
                    StoredEvent(
                        id=event_id,
                        type=type,
                        vm=vm,
                        status=status,
                        message=message,
                        timestamp=timestamp,
                        data=payload,
                    )
                )
        return stored

    async def prune_events(self, keep: int) -> int:
        """Delete all but the newest `keep` events; returns how many went."""
        async with self._transaction() as db:
            cur = await db.execute(
                "DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?", (keep,)
            )
            count = cur.rowcount
            await cur.close()
        return max(count, 0)

    async def events_after(self, after_id: int, limit: int = 1000) -> list[StoredEvent]:
        """Stored events with an id above `after_id`, oldest first, at most `limit`."""
        rows = await self._fetch(
            "SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
        )
        return [_event_from_row(r) for r in rows]

    async def last_event_id(self) -> int:
        """The highest event id so far (0 when there are none)."""
        rows = await self._fetch("SELECT COALESCE(MAX(id), 0) AS last FROM events", ())
        return int(rows[0]["last"])

    async def _fetch(self, sql: str, params: Iterable[object]) -> list[sqlite3.Row]:
        async with self._lock, self._db.execute(sql, tuple(params)) as cur:
            return list(await cur.fetchall())


def _statements(sql: str) -> list[str]:
    """The statements of a migration file (`--` comment lines removed, split on `;`)."""
    code = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [stmt.strip() for stmt in code.split(";") if stmt.strip()]
