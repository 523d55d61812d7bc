"""Benchmark: create-to-ready latency and memory of `process`-runtime VMs through the REST API.

Starts a real `viper-server` on a free loopback port with a throwaway state dir, then creates
VMs with `POST /api/v1/vms?wait=true` one after another (each returns once its Chromium
answers DevTools), measures the host memory of each idle VM (PSS summed over the agent's
process tree: agent, Chromium and its helpers), and deletes them. Prints min / median figures.

    python bench/start.py [--runs 5] [--concurrent 4]

Not a test: it prints figures and always cleans up (server stopped by PID, state dir removed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_pss_mib(root: int) -> float:
    """PSS summed over `root` and all its descendants (agent, Chromium and its helpers)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
            except (OSError, ValueError):
                continue
    tree = {root}
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    total_kib = 0
    for pid in tree:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kib += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return total_kib / 1024


async def wait_healthy(session: aiohttp.ClientSession, base: str) -> None:
    for _ in range(200):
        try:
            async with session.get(f"{base}/healthz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError("viper-server did not come up")


async def create(session: aiohttp.ClientSession, base: str, name: str) -> tuple[float, int]:
    t0 = time.monotonic()
    async with session.post(f"{base}/api/v1/vms?wait=true", json={"name": name}) as resp:
        body = await resp.json()
        if resp.status != 201:
            raise RuntimeError(f"create {name}: {resp.status} {body}")
    return time.monotonic() - t0, int(body["pid"])


async def run(runs: int, concurrent: int, base: str) -> None:
    async with aiohttp.ClientSession() as session:
        await wait_healthy(session, base)
        latencies: list[float] = []
        memory: list[float] = []
        for i in range(runs):
            seconds, pid = await create(session, base, f"bench-{i}")
            await asyncio.sleep(2)  # let the new browser settle before measuring it idle
            latencies.append(seconds)
            memory.append(tree_pss_mib(pid))
            async with session.delete(f"{base}/api/v1/vms/bench-{i}") as resp:
                await resp.read()
        print(
            f"create -> ready (sequential, n={runs}): "
            f"min {min(latencies):.2f} s, median {statistics.median(latencies):.2f} s"
        )
        print(
            f"host memory per idle VM (PSS, n={runs}): "
            f"min {min(memory):.0f} MiB, median {statistics.median(memory):.0f} MiB"
        )
        t0 = time.monotonic()
        results = await asyncio.gather(
            *(create(session, base, f"par-{i}") for i in range(concurrent))
        )
        wall = time.monotonic() - t0
        print(
            f"{concurrent} concurrent creates: all ready in {wall:.2f} s "
            f"(slowest {max(s for s, _ in results):.2f} s)"
        )
        for i in range(concurrent):
            async with session.delete(f"{base}/api/v1/vms/par-{i}") as resp:
                await resp.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--concurrent", type=int, default=4)
    args = parser.parse_args()
    server = shutil.which("viper-server", path=str(Path(sys.executable).parent)) or shutil.which(
        "viper-server"
    )
    if server is None:
        sys.exit("viper-server is not installed (scripts/install.sh)")
    state = tempfile.mkdtemp(prefix="viper-bench-start-")
    port = free_port()
    proc = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--state-dir",
            state,
            "--runtime",
            "process",
            "--stop-vms-on-exit",
            "--log-level",
            "WARNING",
        ],
    )
    try:
        asyncio.run(run(args.runs, args.concurrent, f"http://127.0.0.1:{port}"))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
