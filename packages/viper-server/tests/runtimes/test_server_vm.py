"""The whole path with real microVMs: viper-server with the qemu runtime, inside a namespace.

The server runs under `ip netns exec`, so its bridge, taps and guests live in the test's
namespace; the test drives it from a thread that joined the namespace (REST, Playwright over the
server's DevTools proxy). Covers: a VM booted from the built image and reached over the bridge,
Chromium driven through the server, guests kept off the host's API port and off each other,
a guest killed from outside reported as crashed, a server killed with -9 and restarted adopting
its running VM, and destroy leaving no tap, process, lease or file.
Slow under TCG: VIPER_E2E=1 only.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from viper_server.hypervisors.hostproc import pid_alive

from .helpers import call_in_netns, run_in

PORT = 7777
BASE = f"http://127.0.0.1:{PORT}"
BOOT_TIMEOUT = aiohttp.ClientTimeout(total=400)
# Runs in a page served by the guest's own agent (a loopback origin, so Chromium's Private
# Network Access rules allow it to fetch private addresses): reached, or blocked after how long.
PROBE_JS = """async (url) => {
  const ctl = new AbortController();
  const t0 = performance.now();
  setTimeout(() => ctl.abort(), 8000);
  try { await fetch(url, {mode: 'no-cors', signal: ctl.signal}); return ['reached', 0]; }
  catch (e) { return ['blocked', performance.now() - t0]; }
}"""


class Server:
    """viper-server (qemu runtime) inside namespace `ns`, output appended to a log file."""

    def __init__(self, ns: str, state: Path, images: Path) -> None:
        self.ns, self.state, self.images = ns, state, images
        self.log = state.parent / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, sys.executable, "-m", "viper_server",
                 "--port", str(PORT), "--state-dir", str(self.state), "--runtime", "qemu",
                 "--images", str(self.images), "--log-level", "DEBUG"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "VIPER_API_KEY": "", "VIPER_HOST": ""},
            )  # fmt: skip

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


async def _healthy(http: aiohttp.ClientSession, server: Server) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.proc is not None
        assert server.proc.poll() is None, server.log.read_text()[-3000:]
        try:
            async with http.get(f"{BASE}/healthz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError("server did not come up: " + server.log.read_text()[-3000:])


async def _create(http: aiohttp.ClientSession, name: str) -> dict[str, Any]:
    body = {"name": name, "runtime": "qemu", "cpu_cores": 2, "memory_mb": 512}
    async with http.post(f"{BASE}/api/v1/vms?wait=true", json=body, timeout=BOOT_TIMEOUT) as r:
        vm: dict[str, Any] = await r.json()
        assert r.status in (200, 201), vm
    assert vm["status"] == "running", vm
    return vm


async def _get(http: aiohttp.ClientSession, name: str) -> dict[str, Any]:
    async with http.get(f"{BASE}/api/v1/vms/{name}") as r:
        vm: dict[str, Any] = await r.json()
        return vm


async def _until(http: aiohttp.ClientSession, name: str, status: str, within: float) -> None:
    deadline = time.monotonic() + within
    while (vm := await _get(http, name))["status"] != status:
        assert time.monotonic() < deadline, vm
        await asyncio.sleep(0.3)


async def _drive_browser(name: str) -> tuple[str, list[Any], list[Any]]:
    """Playwright over the server's DevTools proxy: a page, plus two fetches from the guest."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.connect_over_cdp(f"{BASE}/api/v1/vms/{name}/cdp")
        context = browser.contexts[0] if browser.contexts else await browser.new_context()
        page = await context.new_page()
        await page.goto("data:text/html,<title>in a vm</title><p id=x>viper</p>")
        text = f"{await page.title()}/{await page.inner_text('#x')}"
        await page.goto("http://127.0.0.1:8080/v1/health")  # the guest's agent, from inside
        own_agent = await page.evaluate(PROBE_JS, "http://127.0.0.1:8080/v1/health")
        host_api = await page.evaluate(PROBE_JS, f"http://192.168.127.1:{PORT}/healthz")
        await browser.close()
    return text, own_agent, host_api


async def _probe_from(name: str, url: str) -> list[Any]:
    """From VM `name`'s Chromium (a page its agent serves), try to fetch `url`."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.connect_over_cdp(f"{BASE}/api/v1/vms/{name}/cdp")
        context = browser.contexts[0] if browser.contexts else await browser.new_context()
        page = await context.new_page()
        await page.goto("http://127.0.0.1:8080/v1/health")
        result: list[Any] = await page.evaluate(PROBE_JS, url)
        await browser.close()
    return result


async def _scenario(server: Server) -> None:
    server.start()
    async with aiohttp.ClientSession() as http:
        await _healthy(http, server)
        demo = await _create(http, "demo")
        assert demo["ip"] == "192.168.127.2"
        assert demo["mac"] == "0a:58:c0:a8:7f:02"
        assert demo["isolated"] is True
        text, own_agent, host_api = await _drive_browser("demo")
        assert text == "in a vm/viper"
        assert own_agent[0] == "reached"  # fetch works in the guest...
        assert host_api[0] == "blocked"  # ...but not to the host's API port:
        assert host_api[1] > 5000  # dropped by the firewall (a wait), not refused by Chromium

        demo2 = await _create(http, "demo2")
        assert demo2["ip"] == "192.168.127.3"
        peer = await _probe_from("demo", "http://192.168.127.3:8080/v1/health")
        assert peer[0] == "blocked"  # guests cannot reach each other: isolated bridge ports
        assert peer[1] > 2000  # keep ARP from B, so A gives up after its ARP retries

        os.kill(demo["pid"], signal.SIGKILL)  # a guest killed from outside
        await _until(http, "demo", "crashed", 30)
        async with http.delete(f"{BASE}/api/v1/vms/demo") as r:
            assert r.status == 200

        server.kill()  # the server dies with -9; the VM keeps running
        assert pid_alive(demo2["pid"])
        server.start()
        await _healthy(http, server)
        adopted = await _get(http, "demo2")
        assert adopted["status"] == "running"
        assert adopted["pid"] == demo2["pid"]
        async with http.get(f"{BASE}/api/v1/vms/demo2/cdp/json/version") as r:
            assert r.status == 200
        async with http.delete(f"{BASE}/api/v1/vms/demo2") as r:
            assert r.status == 200
        assert not pid_alive(demo2["pid"])


@pytest.mark.vm
def test_server_runs_qemu_vms_end_to_end(
    e2e: None, netns: str, images: Path, tmp_path: Path
) -> None:
    # A short state dir keeps the QMP sockets inside it (a unix socket path has 107 bytes).
    state = Path(tempfile.mkdtemp(prefix="viper-e2e-")) / "state"
    server = Server(netns, state, images)
    try:
        call_in_netns(netns, lambda: asyncio.run(_scenario(server)))
        server.stop()
        assert "vtap-" not in run_in(netns, "ip", "-o", "link")
        run_root = state / "run"
        assert not run_root.exists() or list(run_root.iterdir()) == []
        with sqlite3.connect(state / "state.db") as db:
            assert db.execute("SELECT count(*) FROM ip_allocations").fetchone() == (0,)
    finally:
        server.stop()
        if server.log.exists():  # kept with the test's other output
            shutil.copy(server.log, tmp_path / "server.log")
        shutil.rmtree(state.parent, ignore_errors=True)
