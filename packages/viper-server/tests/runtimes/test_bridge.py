"""BridgeNetworkManager inside a throwaway namespace: bridge, taps, isolation, nftables rules."""

from __future__ import annotations

import subprocess
import sys
from ipaddress import IPv4Network
from pathlib import Path

import pytest
from pyroute2 import AsyncIPRoute

from viper_server.network.bridge import BridgeNetworkManager, nft_ruleset

from .helpers import call_in_netns, delete_netns, make_netns, run_in

SUBNET = IPv4Network("192.168.127.0/24")
API_PORT = 7777


def _root_state() -> tuple[str, str]:
    forward = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return forward, links


@pytest.fixture
def manager(netns: str) -> BridgeNetworkManager:
    return BridgeNetworkManager(SUBNET, api_port=API_PORT, netns=netns)


async def _link(netns: str, name: str) -> dict[str, object]:
    async with AsyncIPRoute(netns=netns) as ipr:
        index = (await ipr.link_lookup(ifname=name))[0]
        (msg,) = await ipr.link("get", index=index)
        info = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_SLAVE_DATA")
        return {
            "master": msg.get("IFLA_MASTER"),
            "up": bool(msg["flags"] & 1),
            "isolated": info.get("IFLA_BRPORT_ISOLATED") if info is not None else None,
            "kind": msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND"),
        }


async def test_ensure_bridge_sets_up_bridge_forwarding_and_rules(
    netns: str, manager: BridgeNetworkManager
) -> None:
    root_before = _root_state()
    await manager.ensure_bridge()
    await manager.ensure_bridge()  # idempotent

    addrs = run_in(netns, "ip", "-o", "-4", "addr", "show", "dev", "viperbr0")
    assert addrs.count("inet ") == 1
    assert "192.168.127.1/24" in addrs
    assert (await _link(netns, "viperbr0"))["kind"] == "bridge"
    assert run_in(netns, "sysctl", "-n", "net.ipv4.ip_forward").strip() == "1"

    ruleset = run_in(netns, "nft", "list", "ruleset")
    assert ruleset.count("table inet viper") == 1
    assert "ip saddr 192.168.127.0/24 ip daddr != 192.168.127.0/24 masquerade" in ruleset
    assert 'iifname "viperbr0" tcp dport 7777 counter' in ruleset
    assert 'iifname "viperbr0" oifname "viperbr0" counter' in ruleset
    assert _root_state() == root_before, "the root namespace must not change"


async def test_taps_are_isolated_ports_and_idempotent(
    netns: str, manager: BridgeNetworkManager
) -> None:
    await manager.ensure_bridge()
    await manager.create_tap("vtap-aaaa")
    await manager.create_tap("vtap-aaaa")
    await manager.create_tap("vtap-bbbb")
    assert await manager.list_taps() == ["vtap-aaaa", "vtap-bbbb"]

    async with AsyncIPRoute(netns=netns) as ipr:
        bridge = (await ipr.link_lookup(ifname="viperbr0"))[0]
    tap = await _link(netns, "vtap-aaaa")
    assert tap == {"master": bridge, "up": True, "isolated": 1, "kind": "tun"}
    assert "isolated on" in run_in(netns, "ip", "-d", "link", "show", "vtap-bbbb")

    await manager.delete_tap("vtap-aaaa")
    await manager.delete_tap("vtap-aaaa")
    assert await manager.list_taps() == ["vtap-bbbb"]
    with pytest.raises(ValueError, match="not a Viper tap"):
        await manager.create_tap("eth0")


async def test_teardown_removes_everything(netns: str, manager: BridgeNetworkManager) -> None:
    await manager.ensure_bridge()
    await manager.create_tap("vtap-cccc")
    await manager.teardown()
    await manager.teardown()
    assert await manager.list_taps() == []
    assert "viperbr0" not in run_in(netns, "ip", "-o", "link")
    assert "viper" not in run_in(netns, "nft", "list", "ruleset")


async def test_create_tap_without_bridge_is_refused(manager: BridgeNetworkManager) -> None:
    from viper_server.network.bridge import NetworkSetupError

    with pytest.raises(NetworkSetupError, match="viperbr0"):
        await manager.create_tap("vtap-dddd")


def _guest(host_ns: str, name: str, ip: str) -> str:
    """A fake guest: its own namespace joined to the bridge by a veth on an isolated port."""
    guest = make_netns()
    run_in(host_ns, "ip", "link", "add", f"vp-{name}", "type", "veth", "peer", "name", "eth0")
    run_in(host_ns, "ip", "link", "set", "eth0", "netns", guest)
    run_in(host_ns, "ip", "link", "set", f"vp-{name}", "master", "viperbr0", "up")
    run_in(
        host_ns, "ip", "link", "set", "dev", f"vp-{name}", "type", "bridge_slave", "isolated", "on"
    )
    run_in(guest, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
    run_in(guest, "ip", "link", "set", "eth0", "up")
    run_in(guest, "ip", "route", "add", "default", "via", "192.168.127.1")
    return guest


_LISTEN = """
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(); print("ready", flush=True)
while True:
    c, _ = s.accept(); c.sendall(b"hi"); c.close()
"""

_CONNECT = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5)
    print(c.recv(2).decode())
except OSError as e:
    print("blocked", type(e).__name__)
"""


def _connect(ns: str, host: str, port: int) -> str:
    out = run_in(ns, "python3", "-c", _CONNECT, host, str(port), check=False)
    return out.strip()


async def test_guests_reach_neither_each_other_nor_host_services(
    netns: str, manager: BridgeNetworkManager
) -> None:
    """Real packets: guest A cannot open the host's API port or guest B; the host reaches both."""
    await manager.ensure_bridge()
    guests = [_guest(netns, "a", "192.168.127.2"), _guest(netns, "b", "192.168.127.3")]
    listeners: list[subprocess.Popen[str]] = []
    try:
        for ns in (netns, *guests):
            port = API_PORT if ns == netns else 8080
            p = subprocess.Popen(
                ["ip", "netns", "exec", ns, "python3", "-c", _LISTEN, str(port)],
                stdout=subprocess.PIPE,
                text=True,
            )
            listeners.append(p)
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
        a, b = guests
        assert _connect(netns, "192.168.127.2", 8080) == "hi"  # server -> agent works
        assert _connect(netns, "192.168.127.3", 8080) == "hi"
        assert _connect(a, "192.168.127.1", API_PORT).startswith("blocked")
        assert _connect(a, "192.168.127.3", 8080).startswith("blocked")  # L2 isolation
        assert _connect(b, "192.168.127.2", 8080).startswith("blocked")
        assert _connect(a, "192.168.127.1", 22).startswith("blocked")
        counters = run_in(netns, "nft", "list", "chain", "inet", "viper", "input")
        api_rule = next(line for line in counters.splitlines() if "viper api" in line)
        assert "packets 0 " not in api_rule, api_rule
    finally:
        for p in listeners:
            p.kill()
            p.communicate()
        for ns in guests:
            delete_netns(ns)


def test_ruleset_text_is_stable() -> None:
    text = nft_ruleset(SUBNET, api_port=None)
    assert text.startswith("table inet viper\ndelete table inet viper\n")
    assert "dport" not in text


def _setup_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "viper_server.network", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_setup_command_plans_sets_up_and_tears_down(netns: str) -> None:
    plan = _setup_cli("--netns", netns, "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert "would set up:" in plan.stdout
    assert "masquerade" in plan.stdout
    assert "kvm" in plan.stdout  # the preflight ran
    assert "viperbr0" not in run_in(netns, "ip", "-o", "link")  # a dry run changes nothing

    done = _setup_cli("--netns", netns)
    assert done.returncode == 0, done.stderr
    assert "viperbr0" in run_in(netns, "ip", "-o", "link")
    assert "table inet viper" in run_in(netns, "nft", "list", "ruleset")

    gone = _setup_cli("--netns", netns, "--teardown")
    assert gone.returncode == 0, gone.stderr
    assert "viperbr0" not in run_in(netns, "ip", "-o", "link")
    assert "viper" not in run_in(netns, "nft", "list", "ruleset")


def test_call_in_netns_moves_only_its_own_thread(netns: str) -> None:
    def links() -> list[str]:
        lines = Path("/proc/thread-self/net/dev").read_text().splitlines()[2:]
        return sorted(line.split(":")[0].strip() for line in lines)

    before = links()
    assert call_in_netns(netns, links) == ["lo"]
    assert links() == before  # this thread did not move
    with pytest.raises(ZeroDivisionError):
        call_in_netns(netns, lambda: 1 // 0)
