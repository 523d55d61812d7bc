"""Lifecycle events: a tagged union on `type`, one class per event type.

On the wire every event is `{id, type, vm, status, message, timestamp, data}`. Clients
structure with a tolerant converter, where a type they do not know becomes `UnknownEvent`
instead of an error, so a newer server never breaks an older CLI.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import ClassVar, TypeAlias, Union

import attrs

from viper_protocol.models.common import JSONObject
from viper_protocol.models.vms import VMStatus


class EventType(enum.StrEnum):
    """The `type` tag of an event."""

    VM_CREATED = "VM_CREATED"
    VM_STARTING = "VM_STARTING"
    VM_RUNNING = "VM_RUNNING"
    VM_STOPPING = "VM_STOPPING"
    VM_STOPPED = "VM_STOPPED"
    VM_CRASHED = "VM_CRASHED"
    VM_DELETED = "VM_DELETED"
    VM_LOG = "VM_LOG"


@attrs.frozen(kw_only=True)
class _EventFields:
    """The fields every event carries. `id` is the store's monotonic sequence number."""

    id: int
    vm: str
    status: VMStatus | None = None
    message: str = ""
    timestamp: datetime
    data: JSONObject = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class VMCreated(_EventFields):
    """The VM row exists (status pending)."""

    type: ClassVar[EventType] = EventType.VM_CREATED


@attrs.frozen(kw_only=True)
class VMStarting(_EventFields):
    """The runtime is launching the VM."""

    type: ClassVar[EventType] = EventType.VM_STARTING


@attrs.frozen(kw_only=True)
class VMRunning(_EventFields):
    """The browser answers DevTools; `data` holds the DevTools metadata."""

    type: ClassVar[EventType] = EventType.VM_RUNNING


@attrs.frozen(kw_only=True)
class VMStopping(_EventFields):
    """A destroy began."""

    type: ClassVar[EventType] = EventType.VM_STOPPING


@attrs.frozen(kw_only=True)
class VMStopped(_EventFields):
    """The VM process is gone after a requested stop."""

    type: ClassVar[EventType] = EventType.VM_STOPPED


@attrs.frozen(kw_only=True)
class VMCrashed(_EventFields):
    """The VM died unexpectedly; `data` holds `exit_code` and `output_tail`."""

    type: ClassVar[EventType] = EventType.VM_CRASHED


@attrs.frozen(kw_only=True)
class VMDeleted(_EventFields):
    """The VM and all its resources are gone."""

    type: ClassVar[EventType] = EventType.VM_DELETED


@attrs.frozen(kw_only=True)
class VMLog(_EventFields):
    """A line of the VM's console or process output; `data` holds `stream` and `line`."""

    type: ClassVar[EventType] = EventType.VM_LOG


@attrs.frozen(kw_only=True)
class UnknownEvent(_EventFields):
    """An event of a type this client does not know yet (tolerant converter only)."""

    type: str = ""


Event: TypeAlias = Union[  # noqa: UP007 (a runtime union object, for cattrs)
    VMCreated, VMStarting, VMRunning, VMStopping, VMStopped, VMCrashed, VMDeleted, VMLog
]

EVENT_CLASSES: dict[EventType, type[Event]] = {
    cls.type: cls
    for cls in (
        VMCreated,
        VMStarting,
        VMRunning,
        VMStopping,
        VMStopped,
        VMCrashed,
        VMDeleted,
        VMLog,
    )
}


def event_type_of(event: Event | UnknownEvent) -> str:
    """The wire `type` of an event object."""
    return str(event.type)
