"""The seam between the lifecycle engine and host networking.

The engine leases IPs (in the store) and asks a `NetworkManager` for a tap per microVM;
the `process` runtime needs neither. Implementations must be idempotent: creating a tap that
exists or deleting one that is gone is not an error, so that crash recovery can replay them.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Protocol


def tap_name(vm_id: str) -> str:
    """The tap of a VM: `vtap-` plus the first 9 characters of its id (IFNAMSIZ is 15)."""
    return f"vtap-{vm_id[:9]}"


def mac_for_ip(ip: IPv4Address) -> str:
    """The deterministic MAC of a guest IP: prefix `0a:58:` then the four address bytes."""
    return "0a:58:" + ":".join(f"{b:02x}" for b in ip.packed)


class NetworkManager(Protocol):
    """Owns the bridge and the taps on it."""

    @property
    def network(self) -> IPv4Network:
        """The guest subnet (192.168.127.0/24 by default)."""

    @property
    def gateway(self) -> IPv4Address:
        """The bridge's address, the guests' gateway (the subnet's first host)."""

    async def ensure_bridge(self) -> None:
        """Create the bridge, its address, NAT and isolation rules if missing (idempotent).

        Raises:
            PermissionError: not allowed to change the network (not root / no CAP_NET_ADMIN).
        """

    async def create_tap(self, name: str) -> None:
        """Create tap `name`, attach it to the bridge as an isolated port, bring it up."""

    async def delete_tap(self, name: str) -> None:
        """Remove tap `name` if it exists."""

    async def list_taps(self) -> list[str]:
        """Names of the Viper taps that exist now (for reconcile: remove the leaked ones)."""

    async def teardown(self) -> None:
        """Remove the bridge, every Viper tap and the NAT rules (idempotent)."""
