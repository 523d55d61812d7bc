"""The built guest image booted for real under QEMU (TCG here): stage 1, overlay, agent, power off.

QEMU runs with user networking and `restrict=on` (the guest reaches nothing; one host-forward on
127.0.0.1 lets the test call the agent), a QMP socket for `system_powerdown` (the ACPI power
button viper-init watches), the serial console in a file. QEMU is killed by its PID in a
`finally`. Slow under TCG, so marked `vm` (VIPER_E2E=1).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm

GUEST_NET = "ip=10.0.2.15::10.0.2.2:255.255.255.0:imgtest:eth0:off"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Guest:
    """One QEMU process booting the image; its console log and QMP socket."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path, qmp: Path, port: int) -> None:
        self.proc, self.log, self.qmp, self.port = proc, log, qmp, port
        self.t0 = time.monotonic()

    def console(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for(self, text: str, timeout: float, *, count: int = 1) -> float:
        """Seconds from QEMU start until `text` shows up `count` times on the console."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.console().count(text) >= count:
                return time.monotonic() - self.t0
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not seen; console tail:\n{self.console()[-3000:]}")

    def powerdown(self) -> None:
        """QMP system_powerdown: what the qemu runtime sends for a graceful stop."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(self.qmp))
            f = s.makefile("rw")
            f.readline()  # greeting
            for cmd in ("qmp_capabilities", "system_powerdown"):
                f.write(json.dumps({"execute": cmd}) + "\n")
                f.flush()
                while "return" not in (reply := json.loads(f.readline())):
                    assert "error" not in reply, reply


@contextmanager
def boot(images: Path, tmp: Path, extra_cmdline: str = "") -> Iterator[Guest]:
    port = free_port()
    log, qmp = tmp / "console.log", tmp / "qmp.sock"
    cmdline = f"console=ttyS0 panic=-1 quiet loglevel=4 tsc_early_khz=2445000 {GUEST_NET}"
    cmd = [
        "qemu-system-x86_64", "-M", "microvm,rtc=on", "-accel", "tcg", "-cpu", "max",
        "-m", "768", "-smp", "2", "-nodefaults", "-no-user-config", "-display", "none",
        "-no-reboot", "-serial", f"file:{log}", "-qmp", f"unix:{qmp},server=on,wait=off",
        "-kernel", str(images / "vmlinuz"), "-initrd", str(images / "initrd.img"),
        "-drive", f"id=root,file={images / 'rootfs.ext4'},format=raw,if=none,readonly=on",
        "-device", "virtio-blk-device,drive=root",
        "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:8080",
        "-device", "virtio-net-device,netdev=n0",
        "-append", f"{cmdline} {extra_cmdline}".strip(),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    try:
        yield Guest(proc, log, qmp, port)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def test_boots_to_a_healthy_agent_and_powers_off_on_the_power_button(
    boot_image: Path, tmp_path: Path
) -> None:
    with boot(boot_image, tmp_path) as guest:
        t_init = guest.wait_for("viper-init: viper-init", 60)
        t_root = guest.wait_for("switched root to the overlay", 60)
        t_net = guest.wait_for("eth0 configured: 10.0.2.15/255.255.255.0 gw 10.0.2.2", 60)
        t_agent = guest.wait_for("viper-init: agent started", 60)
        deadline, health = time.monotonic() + 240, None
        while health is None and time.monotonic() < deadline and guest.proc.poll() is None:
            try:
                url = f"http://127.0.0.1:{guest.port}/v1/health"
                with urllib.request.urlopen(url, timeout=2) as r:
                    health = json.loads(r.read())
            except OSError:
                time.sleep(0.5)
        assert health is not None, guest.console()[-3000:]
        t_health = time.monotonic() - guest.t0
        guest.powerdown()
        assert guest.proc.wait(timeout=90) == 0
        console = guest.console()
        t_off = time.monotonic() - guest.t0
    assert "shutdown requested (ACPI power button)" in console
    assert "viper-init: powering off" in console
    assert "reboot: Power down" in console
    print(
        f"\nboot timings (s from QEMU start): init {t_init:.2f}, overlay root {t_root:.2f}, "
        f"eth0 {t_net:.2f}, agent started {t_agent:.2f}, agent healthy {t_health:.2f}, "
        f"powered off {t_off:.2f}; health: {health}"
    )


def test_a_dying_agent_is_restarted_with_backoff(boot_image: Path, tmp_path: Path) -> None:
    with boot(boot_image, tmp_path, "viper.agent=/usr/bin/false") as guest:
        guest.wait_for("restarting in 1s", 60)
        guest.wait_for("restarting in 2s", 30)
        guest.wait_for("viper-init: agent started", 30, count=3)
        guest.powerdown()
        assert guest.proc.wait(timeout=60) == 0
    assert "powering off" in guest.console()
