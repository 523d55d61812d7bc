"""viper-init, the guest's PID 1: its kernel cmdline parsing, run on the host.

The binary under test is the real one, compiled from build/images/viper-init.c; its
`--parse-cmdline` mode runs the same parser PID 1 uses and prints what it would do.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SERVER_CMDLINE = (
    "console=ttyS0 panic=-1 quiet tsc_early_khz=2445000 "
    "ip=192.168.127.2::192.168.127.1:255.255.255.0:demo:eth0:off"
)


def parse(binary: Path, cmdline: str) -> tuple[int, dict[str, list[str]]]:
    """Exit code and the key -> values printed by `viper-init --parse-cmdline`."""
    proc = subprocess.run(
        [str(binary), "--parse-cmdline", cmdline], capture_output=True, text=True, timeout=10
    )
    out: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("=")
        out.setdefault(key, []).append(value)
    return proc.returncode, out


def test_the_servers_cmdline_configures_eth0_and_the_default_agent(viper_init: Path) -> None:
    code, out = parse(viper_init, SERVER_CMDLINE)
    assert code == 0
    assert out["valid"] == ["1"]
    assert out["ip.client"] == ["192.168.127.2"]
    assert out["ip.gateway"] == ["192.168.127.1"]
    assert out["ip.netmask"] == ["255.255.255.0"]
    assert out["ip.device"] == ["eth0"]
    assert out["hostname"] == ["demo"]
    assert out["root"] == ["/dev/vda"]
    assert out["agent.argv"] == [
        "/opt/viper/venv/bin/viper-agent", "--host", "0.0.0.0", "--port", "8080",
    ]  # fmt: skip
    assert "PYTHONUNBUFFERED=1" in out["agent.env"]


def test_agent_port_args_env_and_quoting(viper_init: Path) -> None:
    code, out = parse(
        viper_init,
        SERVER_CMDLINE + " viper.agent_port=9222 viper.agent_arg=--log-level "
        'viper.agent_arg=debug "viper.agent_env=VIPER_AGENT_CHROMIUM_ARGS=--lang=de --mute-audio"',
    )
    assert code == 0
    assert out["agent.port"] == ["9222"]
    assert out["agent.argv"][3:] == ["--port", "9222", "--log-level", "debug"]
    assert "VIPER_AGENT_CHROMIUM_ARGS=--lang=de --mute-audio" in out["agent.env"]


@pytest.mark.parametrize(
    ("ip", "netmask", "device", "dns"),
    [
        ("10.0.2.15::10.0.2.2:24:h:eth0:off", "255.255.255.0", "eth0", ""),
        ("10.0.2.15::10.0.2.2:20:h::off", "255.255.240.0", "eth0", ""),
        ("10.0.2.15::10.0.2.2::h:eth1:off", "255.255.255.0", "eth1", ""),
        ("10.0.2.15::10.0.2.2:255.255.0.0:h:eth0:off:1.1.1.1", "255.255.0.0", "eth0", "1.1.1.1"),
        ("10.0.2.15::10.0.2.2:255.0.0.0:h:eth0:none:9.9.9.9:8.8.8.8", "255.0.0.0", "eth0",
         "9.9.9.9,8.8.8.8"),
    ],
)  # fmt: skip
def test_ip_variants(viper_init: Path, ip: str, netmask: str, device: str, dns: str) -> None:
    code, out = parse(viper_init, f"ip={ip}")
    assert code == 0, out.get("error")
    assert (out["ip.netmask"], out["ip.device"], out["ip.dns"]) == ([netmask], [device], [dns])


def test_no_gateway_is_allowed(viper_init: Path) -> None:
    code, out = parse(viper_init, "ip=10.0.2.15:::255.255.255.0:h:eth0:off")
    assert code == 0
    assert out["ip.gateway"] == [""]


@pytest.mark.parametrize(
    ("cmdline", "error"),
    [
        ("ip=10.0.0.300::10.0.0.1:255.255.255.0:h:eth0:off", "client address '10.0.0.300'"),
        ("ip=10.0.0.3::gateway:255.255.255.0:h:eth0:off", "gateway 'gateway'"),
        ("ip=10.0.0.3::10.0.0.1:255.0.255.0:h:eth0:off", "not contiguous"),
        ("ip=10.0.0.3::10.0.0.1:33:h:eth0:off", "out of range"),
        ("ip=10.0.0.3::10.0.0.1:24:h:eth0:dhcp", "autoconf 'dhcp'"),
        ("ip=dhcp", "only static"),
        ("ip=10.0.0.3::10.0.0.1:24:h:eth0:off:8.8.8", "DNS server '8.8.8'"),
        ("ip=10.0.0.3::10.0.0.1:24:h:averyveryverylongifname:off", "too long"),
        ("viper.agent_port=0", "viper.agent_port=0"),
        ("viper.agent_port=80x", "expected a number"),
        ("viper.agent_env=NOEQUALS", "NAME=VALUE"),
    ],
)
def test_bad_settings_are_reported_and_not_applied(
    viper_init: Path, cmdline: str, error: str
) -> None:
    code, out = parse(viper_init, cmdline)
    assert code == 1
    assert out["valid"] == ["0"]
    assert error in out["error"][0]
    assert out["ip.present"] == ["0"]
    assert out["agent.port"] == ["8080"]


def test_ip_off_and_unknown_parameters_leave_defaults(viper_init: Path) -> None:
    code, out = parse(viper_init, "ip=off BOOT_IMAGE=/vmlinuz ro foo root=/dev/vdb viper.x=1")
    assert code == 0
    assert out["ip.present"] == ["0"]
    assert out["hostname"] == ["viper"]
    assert out["root"] == ["/dev/vdb"]


def test_refuses_to_run_as_an_ordinary_process(viper_init: Path) -> None:
    proc = subprocess.run([str(viper_init)], capture_output=True, text=True, timeout=10)
    assert proc.returncode == 2
    assert "usage: viper-init" in proc.stderr
    version = subprocess.run([str(viper_init), "--version"], capture_output=True, text=True)
    assert version.returncode == 0
    assert version.stdout.startswith("viper-init ")
