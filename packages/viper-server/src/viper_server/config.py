"""The server's configuration: one frozen `ServerConfig`, built from `VIPER_*` variables.

`__main__` builds it with `ServerConfig.from_env()` and then overrides fields from command line
flags with `attrs.evolve`; tests build it directly. Nothing here does I/O beyond reading the
environment and looking up the `viper-agent` command.
"""

from __future__ import annotations

import enum
import os
import shutil
import sys
from collections.abc import Mapping
from ipaddress import IPv4Network
from pathlib import Path

import attrs

from viper_protocol.models.vms import RuntimeName

DEFAULT_PORT = 7777
DEFAULT_SUBNET = IPv4Network("192.168.127.0/24")

# How long a VM may take from launch to a browser that answers, per runtime. QEMU under TCG
# (no usable KVM, as on the project's own machines) needs far longer than a host process.
DEFAULT_READY_TIMEOUTS: Mapping[RuntimeName, float] = {
    RuntimeName.PROCESS: 30.0,
    RuntimeName.QEMU: 120.0,
    RuntimeName.CLOUD_HYPERVISOR: 60.0,
}


class RuntimeChoice(enum.StrEnum):
    """The default runtime setting: a runtime name, or `auto` to pick the best available."""

    AUTO = "auto"
    PROCESS = "process"
    QEMU = "qemu"
    CLOUD_HYPERVISOR = "cloud-hypervisor"


def _default_state_dir() -> Path:
    return Path("~/.viper").expanduser()


def find_agent_command() -> tuple[str, ...]:
    """The `viper-agent` command: next to this interpreter (same venv) first, then on PATH.

    Falls back to the bare name, which makes the `process` runtime report itself unavailable.
    """
    beside = Path(sys.executable).parent / "viper-agent"
    if beside.is_file() and os.access(beside, os.X_OK):
        return (str(beside),)
    found = shutil.which("viper-agent")
    return (found,) if found else ("viper-agent",)


def _network(value: IPv4Network | str) -> IPv4Network:
    return value if isinstance(value, IPv4Network) else IPv4Network(value, strict=True)


def _path(value: Path | str) -> Path:
    return Path(value).expanduser()


def _opt_path(value: Path | str | None) -> Path | None:
    return None if value is None else _path(value)


@attrs.frozen(kw_only=True)
class ServerConfig:
    """Everything the server needs to know at start.

    Attributes:
        host: address the HTTP server binds.
        port: TCP port the HTTP server binds.
        state_dir: where `state.db`, `run/` (per-VM directories) and `logs/` live.
        runtime: the default runtime for VMs created without one (`auto` picks).
        subnet: the guest subnet; its first host is the bridge/gateway.
        images: the guest image directory (None: `<state_dir>/images`).
        api_key: the bearer token every route but /healthz requires, if set.
        stop_vms_on_exit: destroy every VM at shutdown instead of leaving them to be adopted.
        max_vms: at most this many VMs exist (not stopped or crashed) at once.
        idle_timeout_seconds: destroy a VM after this long without API or CDP activity
            (None: never, unless the VM asks for its own).
        agent_command: the `viper-agent` command the `process` runtime runs.
        event_retention: how many of the newest events the store keeps (for replay).
        accel: the QEMU accelerator: `auto` (probe), `kvm` or `tcg`.
        ready_timeouts: per runtime, seconds from launch to a browser that answers.
        reaper_interval: seconds between checks for expired and idle VMs.
        stop_timeout: seconds a graceful stop may take before the process is killed.
        health_interval: seconds between health checks of a running VM's agent.
        browser_down_timeout: a running VM whose browser stays down (or whose agent stays
            unreachable) this long is marked crashed. A Chromium that crashed crashes its VM
            at the next health check, even though the agent restarts it.
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    state_dir: Path = attrs.field(factory=_default_state_dir, converter=_path)
    runtime: RuntimeChoice = attrs.field(default=RuntimeChoice.AUTO, converter=RuntimeChoice)
    subnet: IPv4Network = attrs.field(default=DEFAULT_SUBNET, converter=_network)
    images: Path | None = attrs.field(default=None, converter=_opt_path)
    api_key: str | None = None
    stop_vms_on_exit: bool = False
    max_vms: int = 64
    idle_timeout_seconds: float | None = None
    agent_command: tuple[str, ...] = attrs.field(factory=find_agent_command, converter=tuple)
    accel: str = attrs.field(default="auto", validator=attrs.validators.in_(("auto", "kvm", "tcg")))
    ready_timeouts: Mapping[RuntimeName, float] = attrs.field(
        factory=lambda: dict(DEFAULT_READY_TIMEOUTS)
    )
    reaper_interval: float = 1.0
    stop_timeout: float = 10.0
    health_interval: float = 1.0
    event_retention: int = 100_000
    browser_down_timeout: float = 30.0

    @property
    def db_path(self) -> Path:
        """The SQLite database file."""
        return self.state_dir / "state.db"

    @property
    def run_root(self) -> Path:
        """The parent of every VM's private run directory (`run/<vm id>`)."""
        return self.state_dir / "run"

    @property
    def logs_dir(self) -> Path:
        """Where each VM's console / process output goes (`logs/<vm id>.log`)."""
        return self.state_dir / "logs"

    @property
    def images_dir(self) -> Path:
        """The guest image directory (`--images`, default `<state_dir>/images`)."""
        return self.images if self.images is not None else self.state_dir / "images"

    def ready_timeout(self, runtime: RuntimeName) -> float:
        """Seconds a VM of `runtime` may take to have a browser that answers."""
        return self.ready_timeouts.get(runtime, DEFAULT_READY_TIMEOUTS[runtime])

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: object
    ) -> ServerConfig:
        """Build a config from `VIPER_*` environment variables; `overrides` win over them.

        Reads `VIPER_HOST`, `VIPER_PORT`, `VIPER_STATE_DIR`, `VIPER_RUNTIME`, `VIPER_SUBNET`,
        `VIPER_IMAGES`, `VIPER_API_KEY`, `VIPER_STOP_VMS_ON_EXIT`, `VIPER_MAX_VMS`,
        `VIPER_IDLE_TIMEOUT` (seconds), `VIPER_ACCEL` and `VIPER_AGENT_COMMAND` (split on
        spaces).

        Raises:
            ValueError: a variable holds a value of the wrong form (named in the message).
        """
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}

        def read(var: str, field: str, parse: type | None = None) -> None:
            raw = env.get(var)
            if raw is None or raw == "":
                return
            try:
                values[field] = parse(raw) if parse is not None else raw
            except ValueError as exc:
                raise ValueError(f"{var}={raw!r}: {exc}") from None

        read("VIPER_HOST", "host")
        read("VIPER_PORT", "port", int)
        read("VIPER_STATE_DIR", "state_dir", Path)
        read("VIPER_RUNTIME", "runtime", RuntimeChoice)
        read("VIPER_SUBNET", "subnet", IPv4Network)
        read("VIPER_IMAGES", "images", Path)
        read("VIPER_API_KEY", "api_key")
        read("VIPER_MAX_VMS", "max_vms", int)
        read("VIPER_IDLE_TIMEOUT", "idle_timeout_seconds", float)
        read("VIPER_ACCEL", "accel")
        stop = env.get("VIPER_STOP_VMS_ON_EXIT")
        if stop:
            values["stop_vms_on_exit"] = stop.strip().lower() in ("1", "true", "yes", "on")
        agent = env.get("VIPER_AGENT_COMMAND")
        if agent:
            values["agent_command"] = tuple(agent.split())
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
