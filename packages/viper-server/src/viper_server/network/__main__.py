"""`python -m viper_server.network`: host preflight and network setup for microVMs.

The command behind `viper setup`. It checks KVM (the probe, not the device's presence), tun,
the VMM binaries and the guest image, then sets up the bridge, forwarding and the nftables table.
`--dry-run` prints the plan and changes nothing. `--teardown` removes the network again.
`--netns` works inside an existing namespace instead of the host's own.
Exit status: 0 when done (or planned), 1 when setup failed, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
from ipaddress import IPv4Network
from pathlib import Path

from viper_server import kvm
from viper_server.config import DEFAULT_PORT, DEFAULT_SUBNET
from viper_server.network.bridge import BridgeNetworkManager, NetworkSetupError

IMAGE_FILES = ("vmlinuz", "vmlinux-x86_64", "initrd.img", "rootfs.ext4", "manifest.json")


def preflight(images: Path) -> list[tuple[str, bool, str]]:
    """(check, ok, detail) for everything a microVM host needs."""
    info = kvm.probe_kvm()
    missing = [f for f in IMAGE_FILES if not (images / f).is_file()]
    checks = [
        ("kvm", info.usable, f"accel={info.accel}: {info.detail}"),
        ("tun", os.path.exists("/dev/net/tun"), "/dev/net/tun"),
        ("qemu", shutil.which("qemu-system-x86_64") is not None, "qemu-system-x86_64"),
        ("cloud-hypervisor", shutil.which("cloud-hypervisor") is not None, "cloud-hypervisor"),
        ("nft", shutil.which("nft") is not None, "nftables (apt-get install nftables)"),
        (
            "image",
            not missing,
            f"{images}" + (f": missing {', '.join(missing)}" if missing else ""),
        ),
    ]
    return checks


def main(argv: list[str] | None = None, prog: str = "python -m viper_server.network") -> int:
    """Run the preflight, then set up (or plan, or tear down) the host network."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Check this host for microVMs and set up (or tear down) their network.",
    )
    parser.add_argument("--subnet", type=IPv4Network, default=DEFAULT_SUBNET)
    parser.add_argument("--api-port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--images", type=Path, default=Path("~/.viper/images").expanduser())
    parser.add_argument("--netns", help="work inside this existing network namespace")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    mode.add_argument("--teardown", action="store_true", help="remove bridge, taps and rules")
    args = parser.parse_args(argv)

    for name, ok, detail in preflight(args.images):
        print(f"{'ok ' if ok else 'no '} {name:17} {detail}")
    manager = BridgeNetworkManager(args.subnet, api_port=args.api_port, netns=args.netns)
    if args.dry_run:
        print("would set up:")
        for line in manager.plan():
            print(f"    {line}")
        return 0
    try:
        if args.teardown:
            asyncio.run(manager.teardown())
            print(f"removed {manager.bridge}, its taps and table inet viper")
        else:
            asyncio.run(manager.ensure_bridge())
            print(f"{manager.bridge} ready: {manager.gateway}/{manager.network.prefixlen}, NAT on")
    except (PermissionError, NetworkSetupError) as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
