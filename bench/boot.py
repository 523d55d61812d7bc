"""Boot benchmark for the qemu runtime: boot-to-CDP-ready time and host memory per idle VM.

Boots the guest image N times (5 by default) with the `qemu` runtime, one VM at a time, and
prints for each boot the seconds from launching QEMU until the agent answers DevTools discovery
(`GET /json/version` through the agent, i.e. Chromium is ready for CDP), then min/median; and,
after the VM idled a few seconds, the QEMU process's PSS and RSS (the host memory one idle VM
costs). Not a test: it prints figures and exits 0.

Everything happens inside a network namespace made for the run and deleted afterwards: the
script re-executes itself under `ip netns exec`, so the bridge, taps and guest addresses never
touch the host's own network. Needs root, qemu-system-x86_64 and a built image.

    sudo python bench/boot.py [--images DIR] [--runs 5] [--memory 512] [--cpus 2] [--accel auto]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from viper_server.hypervisors.base import LaunchSpec
from viper_server.hypervisors.qemu import QemuHypervisor, QemuOptions, QemuVM
from viper_server.network.base import mac_for_ip, tap_name
from viper_server.network.bridge import BridgeNetworkManager

INNER = "VIPER_BENCH_INNER"
NET = IPv4Network("192.168.127.0/24")
REPO = Path(__file__).resolve().parents[1]


def default_images() -> Path:
    """$VIPER_IMAGES, else build/artifacts, else ~/.viper/images."""
    env = os.environ.get("VIPER_IMAGES")
    if env:
        return Path(env)
    if (REPO / "build" / "artifacts" / "rootfs.ext4").is_file():
        return REPO / "build" / "artifacts"
    return Path("~/.viper/images").expanduser()


def memory_kib(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of a process in KiB, from /proc/<pid>/smaps_rollup."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Pss", "Rss"):
            values[key] = int(rest.split()[0])
    return values.get("Pss", 0), values.get("Rss", 0)


def _get(url: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            data: dict[str, object] = json.loads(response.read())
            return data
    except (OSError, ValueError):
        return None


async def wait_cdp_ready(vm: QemuVM, deadline: float) -> float:
    """Poll the agent's `/json/version` until it answers; seconds waited. Raises on timeout."""
    start = time.monotonic()
    while time.monotonic() - start < deadline:
        if vm.exited:
            raise RuntimeError(f"QEMU exited: {vm.output_tail()}")
        if await asyncio.to_thread(_get, f"{vm.agent_url}/json/version") is not None:
            return time.monotonic() - start
        await asyncio.sleep(0.2)
    raise TimeoutError(f"not ready after {deadline:.0f}s: {vm.output_tail()}")


async def one_boot(
    n: int, hv: QemuHypervisor, net: BridgeNetworkManager, args: argparse.Namespace, tmp: Path
) -> tuple[float, int, int]:
    """Boot once; (seconds to CDP ready, PSS KiB, RSS KiB) after idling."""
    vm_id = f"bench{n}{secrets.token_hex(4)}"
    ip = IPv4Address("192.168.127.2")
    spec = LaunchSpec(
        vm_id=vm_id,
        name=f"bench{n}",
        cpu_cores=args.cpus,
        memory_mb=args.memory,
        run_dir=tmp / vm_id,
        log_path=tmp / f"{vm_id}.log",
        ip=ip,
        network=NET,
        gateway=net.gateway,
        mac=mac_for_ip(ip),
        tap=tap_name(vm_id),
    )
    assert spec.tap is not None
    await net.create_tap(spec.tap)
    started = time.monotonic()
    vm = await hv.launch(spec)
    assert isinstance(vm, QemuVM)
    try:
        await wait_cdp_ready(vm, args.deadline)
        ready = time.monotonic() - started
        await asyncio.sleep(args.idle)
        pss, rss = memory_kib(vm.pid)
    finally:
        await vm.shutdown(timeout=10)
        await net.delete_tap(spec.tap)
    return ready, pss, rss


async def inner(args: argparse.Namespace) -> None:
    """The benchmark proper, already inside the namespace."""
    net = BridgeNetworkManager(NET, api_port=7777)
    await net.ensure_bridge()
    options = QemuOptions(
        images_dir=args.images, accel=args.accel, tcg_tb_size_mb=args.tb_size or None
    )
    hv = QemuHypervisor(options)
    accel = await hv.accel()
    print(f"qemu runtime, accel={accel.accel} ({accel.detail})")
    print(f"image {args.images}, {args.cpus} vCPU, {args.memory} MiB, {args.runs} boots")
    if accel.accel == "tcg":
        print(f"TCG translation cache: {args.tb_size or 'QEMU default'} MiB")
    results = []
    with tempfile.TemporaryDirectory(prefix="viper-bench-") as tmp:
        try:
            for n in range(args.runs):
                ready, pss, rss = await one_boot(n, hv, net, args, Path(tmp))
                results.append((ready, pss, rss))
                print(
                    f"boot {n + 1}: CDP ready {ready:6.2f} s, idle qemu PSS {pss / 1024:6.0f} MiB"
                    f" RSS {rss / 1024:6.0f} MiB",
                    flush=True,
                )
        finally:
            await net.teardown()
    ready_times = [r[0] for r in results]
    pss_mib = [r[1] / 1024 for r in results]
    rss_mib = [r[2] / 1024 for r in results]
    median = statistics.median(ready_times)
    print(f"boot-to-CDP-ready: min {min(ready_times):.2f} s, median {median:.2f} s")
    print(
        f"host memory per idle VM (qemu process): PSS median {statistics.median(pss_mib):.0f} MiB,"
        f" RSS median {statistics.median(rss_mib):.0f} MiB"
    )


def main() -> int:
    """Parse arguments; re-run inside a fresh namespace unless already there."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=default_images())
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--memory", type=int, default=512, help="guest MiB")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    parser.add_argument(
        "--tb-size",
        type=int,
        default=256,
        help="TCG translation cache MiB (0: QEMU default, 1 GiB)",
    )
    parser.add_argument("--idle", type=float, default=10.0, help="seconds idle before measuring")
    parser.add_argument("--deadline", type=float, default=240.0, help="seconds per boot")
    args = parser.parse_args()
    if os.environ.get(INNER) == "1":
        asyncio.run(inner(args))
        return 0
    if os.geteuid() != 0:
        print("needs root (network namespace, bridge, taps)", file=sys.stderr)
        return 2
    ns = f"viper-bench-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        env = {**os.environ, INNER: "1"}
        argv = [sys.executable, *sys.argv]
        return subprocess.run(["ip", "netns", "exec", ns, *argv], env=env, check=False).returncode
    finally:
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
        for pid in pids.split():  # only this benchmark's own processes live there
            subprocess.run(["kill", "-9", pid], check=False)
        subprocess.run(["ip", "netns", "del", ns], check=False)


if __name__ == "__main__":
    sys.exit(main())
