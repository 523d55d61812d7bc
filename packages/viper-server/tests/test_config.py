"""Configuration from the environment, defaults, and the KVM heuristic."""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

import attrs
import pytest

from viper_protocol.models.system import KVMInfo
from viper_server import kvm
from viper_server.config import RuntimeChoice, ServerConfig


def test_defaults_and_derived_paths(tmp_path: Path) -> None:
    cfg = ServerConfig(state_dir=tmp_path)
    assert cfg.host == "127.0.0.1"
    assert cfg.port == 7777
    assert cfg.subnet == IPv4Network("192.168.127.0/24")
    assert cfg.runtime is RuntimeChoice.AUTO
    assert cfg.db_path == tmp_path / "state.db"
    assert cfg.images_dir == tmp_path / "images"
    assert cfg.agent_command[0].endswith("viper-agent")
    assert attrs.evolve(cfg, images="/srv/img").images_dir == Path("/srv/img")


def test_from_env_and_overrides(tmp_path: Path) -> None:
    env = {
        "VIPER_HOST": "0.0.0.0",
        "VIPER_PORT": "8000",
        "VIPER_STATE_DIR": str(tmp_path),
        "VIPER_RUNTIME": "process",
        "VIPER_SUBNET": "10.1.0.0/16",
        "VIPER_API_KEY": "k",
        "VIPER_STOP_VMS_ON_EXIT": "yes",
        "VIPER_MAX_VMS": "3",
        "VIPER_IDLE_TIMEOUT": "90",
        "VIPER_AGENT_COMMAND": "/opt/agent --flag",
    }
    cfg = ServerConfig.from_env(env, port=9000, api_key=None)
    assert cfg.host == "0.0.0.0"
    assert cfg.port == 9000, "explicit overrides win; None overrides are ignored"
    assert cfg.api_key == "k"
    assert cfg.state_dir == tmp_path
    assert cfg.runtime is RuntimeChoice.PROCESS
    assert cfg.subnet == IPv4Network("10.1.0.0/16")
    assert cfg.stop_vms_on_exit is True
    assert cfg.max_vms == 3
    assert cfg.idle_timeout_seconds == 90.0
    assert cfg.agent_command == ("/opt/agent", "--flag")


@pytest.mark.parametrize(
    ("var", "value"),
    [("VIPER_PORT", "eighty"), ("VIPER_RUNTIME", "docker"), ("VIPER_SUBNET", "10.0.0.1/24")],
)
def test_from_env_names_the_bad_variable(var: str, value: str) -> None:
    with pytest.raises(ValueError, match=var):
        ServerConfig.from_env({var: value})


def test_kvm_heuristic(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    device = tmp_path / "kvm"
    missing = kvm.heuristic_probe(device, cpuinfo)
    assert (missing.present, missing.usable, missing.accel) == (False, False, "tcg")
    device.write_text("")
    cpuinfo.write_text("processor : 0\nflags : fpu sse2 hypervisor\n")
    pvm = kvm.heuristic_probe(device, cpuinfo)
    assert (pvm.present, pvm.usable) == (True, False)
    assert "vmx/svm" in pvm.detail
    cpuinfo.write_text("processor : 0\nflags : fpu vmx sse2\n")
    real = kvm.heuristic_probe(device, cpuinfo)
    assert (real.present, real.usable, real.accel) == (True, True, "kvm")


def test_kvm_probe_override() -> None:
    try:
        info = KVMInfo(present=True, usable=True, accel="kvm", detail="measured")
        kvm.set_probe_result(info)
        assert kvm.probe_kvm() is info
    finally:
        kvm.set_probe_result(None)
    assert kvm.probe_kvm().detail != "measured"
