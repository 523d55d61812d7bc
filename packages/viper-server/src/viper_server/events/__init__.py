"""The in-process event bus: lifecycle events fanned out to bounded subscriber queues."""

from viper_server.events.bus import EventBus, Subscription, to_event

__all__ = ["EventBus", "Subscription", "to_event"]
