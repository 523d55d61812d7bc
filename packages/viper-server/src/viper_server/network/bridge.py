"""Host networking for microVMs on one Linux bridge: `BridgeNetworkManager`.

Owns the bridge (`viperbr0` by default) with the subnet's gateway address, one persistent tap
per VM enslaved to it as an *isolated* bridge port (guests cannot reach each other at layer 2),
IPv4 forwarding, and one nftables table, `inet viper`, that

* masquerades guest traffic leaving the subnet (NAT),
* drops guest-to-guest traffic routed through the host (layer 3 isolation),
* drops new connections from guests to the host itself (the API port above all; the server's
  own connections to the agents are answered as `established`),
* drops guest traffic to link-local addresses (cloud metadata services),
* drops connections opened from outside towards the guests, and spoofed guest sources.

Links go through pyroute2's `AsyncIPRoute`; the nftables table is replaced atomically with
`nft -f -` (the `table; delete table; table {...}` idiom), so every call is idempotent.

`netns` runs all of it inside an existing network namespace (tests and benchmarks; the
production server works in its own namespace): pyroute2 opens its socket there and commands run
under `ip netns exec`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

logger = logging.getLogger(__name__)

DEFAULT_BRIDGE = "viperbr0"
TAP_PREFIX = "vtap-"
NFT_TABLE = "viper"
# Link-local covers the cloud metadata services (169.254.169.254) a guest browser must not see.
_LINK_LOCAL = "169.254.0.0/16"


class NetworkSetupError(RuntimeError):
    """A host networking command failed (message holds the command and its output)."""


def nft_ruleset(
    network: IPv4Network, *, bridge: str = DEFAULT_BRIDGE, api_port: int | None = None
) -> str:
    """The nftables script that (re)creates the `inet viper` table atomically.

    Args:
        network: the guest subnet.
        bridge: the bridge the guests' taps are enslaved to.
        api_port: the server's TCP port, named in its own rule (counted) for clarity; every
            other new guest-to-host connection is dropped as well.
    """
    api_rule = (
        f'        iifname "{bridge}" tcp dport {api_port} counter drop comment "viper api"\n'
        if api_port is not None
        else ""
    )
    return (
        f"table inet {NFT_TABLE}\n"
        f"delete table inet {NFT_TABLE}\n"
        f"table inet {NFT_TABLE} {{\n"
        "    chain input {\n"
        "        type filter hook input priority filter; policy accept;\n"
        f'        iifname "{bridge}" ct state established,related accept\n'
        f'        iifname "{bridge}" icmp type echo-request accept\n'
        f"{api_rule}"
        f'        iifname "{bridge}" counter drop comment "guests may not open host services"\n'
        "    }\n"
        "    chain forward {\n"
        "        type filter hook forward priority filter; policy accept;\n"
        f'        iifname "{bridge}" oifname "{bridge}" counter drop comment "guest isolation"\n'
        f'        iifname "{bridge}" ip daddr {_LINK_LOCAL} counter drop comment "metadata"\n'
        f'        oifname "{bridge}" ct state established,related accept\n'
        f'        oifname "{bridge}" counter drop comment "no inbound to guests"\n'
        f'        iifname "{bridge}" ip saddr != {network} counter drop comment "spoofed"\n'
        "    }\n"
        "    chain postrouting {\n"
        "        type nat hook postrouting priority srcnat; policy accept;\n"
        f"        ip saddr {network} ip daddr != {network} masquerade\n"
        "    }\n"
        "}\n"
    )


def nft_teardown_script() -> str:
    """The nftables script that removes the `inet viper` table whether or not it exists."""
    return f"table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n"


class BridgeNetworkManager:
    """`NetworkManager` on a Linux bridge with isolated tap ports and an nftables table.

    Args:
        network: the guest subnet; its first host is the bridge address and the gateway.
        bridge: the bridge's name.
        api_port: the server's port, dropped for guests by its own rule.
        netns: run everything inside this existing network namespace (tests, benchmarks).
    """

    def __init__(
        self,
        network: IPv4Network,
        *,
        bridge: str = DEFAULT_BRIDGE,
        api_port: int | None = None,
        netns: str | None = None,
    ) -> None:
        if network.prefixlen > 30:
            raise ValueError(f"subnet {network} is too small for guests")
        self._network = network
        self._gateway = next(network.hosts())
        self._bridge = bridge
        self._api_port = api_port
        self._netns = netns
        self._lock = asyncio.Lock()

    @property
    def network(self) -> IPv4Network:
        """The guest subnet."""
        return self._network

    @property
    def gateway(self) -> IPv4Address:
        """The bridge's address, the guests' gateway (the subnet's first host)."""
        return self._gateway

    @property
    def bridge(self) -> str:
        """The bridge's interface name."""
        return self._bridge

    @property
    def netns(self) -> str | None:
        """The network namespace everything happens in (None: the server's own)."""
        return self._netns

    def _ipr(self) -> AsyncIPRoute:
        return AsyncIPRoute(netns=self._netns) if self._netns else AsyncIPRoute()

    def command_prefix(self) -> list[str]:
        """The prefix that runs a command in this manager's namespace (empty for the own one)."""
        return ["ip", "netns", "exec", self._netns] if self._netns else []

    def plan(self) -> list[str]:
        """What `ensure_bridge` makes sure of, as readable lines (for `viper setup --dry-run`)."""
        prefix = self._network.prefixlen
        return [
            f"bridge {self._bridge} up with address {self._gateway}/{prefix}",
            "sysctl net.ipv4.ip_forward=1",
            f"nftables table inet {NFT_TABLE}:",
            *nft_ruleset(self._network, bridge=self._bridge, api_port=self._api_port).splitlines()[
                2:
            ],
        ]

    async def ensure_bridge(self) -> None:
        """Create the bridge, its address, forwarding and the nftables table if missing.

        Raises:
            PermissionError: not allowed to change the network (not root / no CAP_NET_ADMIN).
            NetworkSetupError: `nft` or `sysctl` failed.
        """
        async with self._lock:
            async with self._ipr() as ipr:
                index = await self._ensure_bridge_link(ipr)
                await self._ensure_address(ipr, index)
            await self._run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
            script = nft_ruleset(self._network, bridge=self._bridge, api_port=self._api_port)
            await self._run(["nft", "-f", "-"], stdin=script)
        logger.info("bridge %s ready (%s/%d)", self._bridge, self._gateway, self._network.prefixlen)

    async def _ensure_bridge_link(self, ipr: AsyncIPRoute) -> int:
        index = await _lookup(ipr, self._bridge)
        if index is None:
            await _netlink(ipr.link("add", ifname=self._bridge, kind="bridge"), ok=(errno.EEXIST,))
            index = await _lookup(ipr, self._bridge)
            if index is None:  # pragma: no cover - the kernel just said it exists
                raise NetworkSetupError(f"bridge {self._bridge} vanished after creation")
        await _netlink(ipr.link("set", index=index, state="up"))
        return index

    async def _ensure_address(self, ipr: AsyncIPRoute, index: int) -> None:
        have = {
            (msg.get("IFA_ADDRESS"), msg["prefixlen"])
            for msg in await _collect(ipr.addr("dump", index=index, family=2))
        }
        if (str(self._gateway), self._network.prefixlen) not in have:
            await _netlink(
                ipr.addr(
                    "add",
                    index=index,
                    address=str(self._gateway),
                    prefixlen=self._network.prefixlen,
                ),
                ok=(errno.EEXIST,),
            )

    async def create_tap(self, name: str) -> None:
        """Create tap `name` (or repair it), enslave it as an isolated port, bring it up.

        Raises:
            PermissionError: not allowed to change the network.
            NetworkSetupError: the bridge does not exist (call `ensure_bridge` first).
        """
        if not name.startswith(TAP_PREFIX) or len(name) > 15:
            raise ValueError(f"not a Viper tap name: {name!r}")
        async with self._ipr() as ipr:
            bridge = await _lookup(ipr, self._bridge)
            if bridge is None:
                raise NetworkSetupError(f"bridge {self._bridge} does not exist")
            index = await _lookup(ipr, name)
            if index is None:
                await _netlink(
                    ipr.link(
                        "add",
                        ifname=name,
                        kind="tuntap",
                        mode="tap",
                        iff_no_pi=True,
                        iff_vnet_hdr=True,
                    ),
                    ok=(errno.EEXIST, errno.EBUSY),
                )
                index = await _lookup(ipr, name)
                if index is None:  # pragma: no cover
                    raise NetworkSetupError(f"tap {name} vanished after creation")
            await _netlink(ipr.link("set", index=index, master=bridge))
            # Port isolation: isolated ports only forward to non-isolated ones (the bridge).
            await _netlink(ipr.brport("set", index=index, isolated=1))
            await _netlink(ipr.link("set", index=index, state="up"))
        logger.debug("tap %s on %s", name, self._bridge)

    async def delete_tap(self, name: str) -> None:
        """Remove tap `name` if it exists (a missing tap is not an error)."""
        async with self._ipr() as ipr:
            index = await _lookup(ipr, name)
            if index is not None:
                await _netlink(ipr.link("del", index=index), ok=(errno.ENODEV,))
                logger.debug("tap %s removed", name)

    async def list_taps(self) -> list[str]:
        """Names of the Viper taps (`vtap-*`) that exist now."""
        async with self._ipr() as ipr:
            links = await _collect(ipr.link("dump"))
        names = [str(link.get("IFLA_IFNAME")) for link in links]
        return sorted(n for n in names if n.startswith(TAP_PREFIX))

    async def teardown(self) -> None:
        """Remove every Viper tap, the bridge and the nftables table (idempotent).

        IPv4 forwarding is left on: other software on the host may rely on it.
        """
        async with self._lock:
            for tap in await self.list_taps():
                await self.delete_tap(tap)
            async with self._ipr() as ipr:
                index = await _lookup(ipr, self._bridge)
                if index is not None:
                    await _netlink(ipr.link("del", index=index), ok=(errno.ENODEV,))
            await self._run(["nft", "-f", "-"], stdin=nft_teardown_script())
        logger.info("bridge %s and its rules removed", self._bridge)

    async def _run(self, argv: Sequence[str], *, stdin: str | None = None) -> str:
        cmd = [*self.command_prefix(), *argv]
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except FileNotFoundError as exc:
            raise NetworkSetupError(f"{cmd[0]} is not installed: {exc}") from exc
        out, _ = await proc.communicate(stdin.encode() if stdin is not None else None)
        text = out.decode(errors="replace").strip()
        if proc.returncode != 0:
            if "Operation not permitted" in text:
                raise PermissionError(f"{' '.join(cmd)}: {text}")
            raise NetworkSetupError(f"{' '.join(cmd)} exited {proc.returncode}: {text}")
        return text


async def _collect(result: Any) -> list[Any]:
    """pyroute2 0.9 answers either a list or an async generator of messages."""
    value = await result
    if isinstance(value, list | tuple):
        return list(value)
    return [msg async for msg in value]


async def _lookup(ipr: AsyncIPRoute, ifname: str) -> int | None:
    found = await ipr.link_lookup(ifname=ifname)
    return int(found[0]) if found else None


async def _netlink(call: Any, *, ok: tuple[int, ...] = ()) -> None:
    """Await a pyroute2 request; map EPERM to PermissionError, ignore the `ok` errnos."""
    try:
        await _collect(call)
    except NetlinkError as exc:
        if exc.code in ok:
            return
        if exc.code == errno.EPERM:
            raise PermissionError(str(exc)) from exc
        raise
