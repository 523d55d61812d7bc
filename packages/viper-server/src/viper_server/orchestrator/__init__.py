"""The lifecycle engine: VM state machine, supervision, expiry and reconcile at start."""

from viper_server.orchestrator.engine import Engine, open_engine
from viper_server.orchestrator.metrics import Histogram, Metrics

__all__ = ["Engine", "Histogram", "Metrics", "open_engine"]
