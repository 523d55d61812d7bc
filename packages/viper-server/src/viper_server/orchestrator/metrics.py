"""Counters and a latency histogram the engine keeps, for the web layer's `/metrics`.

Plain numbers, no Prometheus dependency: the web layer renders them as Prometheus text
(`viper_vm_creates_total`, `viper_vm_start_seconds_bucket`, ...). VMs by status come from the
store (`Engine.status_counts()`), not from here, so that they survive restarts.
"""

from __future__ import annotations

import math

import attrs

START_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, math.inf)


@attrs.define
class Histogram:
    """A cumulative histogram: `counts[i]` observations were <= `buckets[i]`."""

    buckets: tuple[float, ...] = START_BUCKETS
    counts: list[int] = attrs.field(init=False)
    sum: float = 0.0
    count: int = 0

    def __attrs_post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        """Record one observation."""
        self.sum += value
        self.count += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1


@attrs.define
class Metrics:
    """What the engine has done since it started.

    Attributes:
        creates: create requests accepted (a row was inserted).
        create_failures: creates that ended without a running VM (launch or readiness failed).
        crashes: VMs that died unexpectedly (including those found dead at reconcile).
        deletes: VMs destroyed (by request, TTL or idle timeout).
        expirations: VMs destroyed by TTL or idle timeout (a subset of `deletes`).
        adopted: VMs re-attached at start.
        start_seconds: seconds from create to running.
    """

    creates: int = 0
    create_failures: int = 0
    crashes: int = 0
    deletes: int = 0
    expirations: int = 0
    adopted: int = 0
    start_seconds: Histogram = attrs.field(factory=Histogram)
