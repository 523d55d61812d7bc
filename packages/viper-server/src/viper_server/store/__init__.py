"""Persistent state on SQLite (aiosqlite): VM rows, IP leases and the event log."""

from viper_server.store.db import Store, utcnow
from viper_server.store.records import StoredEvent, VMRecord

__all__ = ["Store", "StoredEvent", "VMRecord", "utcnow"]
