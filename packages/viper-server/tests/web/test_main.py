"""The `viper-server` command: flags and environment, the loopback rule, graceful shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from viper_server.__main__ import build_parser, is_loopback, load_config


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "viper_server", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def test_version() -> None:
    done = _run("--version")
    assert done.returncode == 0
    assert done.stdout.startswith("viper-server ")


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--host", "0.0.0.0"], {}),
        ([], {"VIPER_HOST": "0.0.0.0"}),
        (["--host", "192.0.2.10"], {}),
    ],
)
def test_refuses_public_bind_without_key(args: list[str], env: dict[str, str]) -> None:
    done = _run(*args, env={**env, "VIPER_API_KEY": ""})
    assert done.returncode == 2
    assert "not a loopback address, without an API key" in done.stderr


def test_bad_values_exit_2() -> None:
    done = _run("--runtime", "docker")
    assert done.returncode == 2
    done = _run("--subnet", "not-a-cidr")
    assert done.returncode == 2
    assert "error" in done.stderr


def test_flags_win_over_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIPER_PORT", "8000")
    monkeypatch.setenv("VIPER_RUNTIME", "qemu")
    monkeypatch.setenv("VIPER_API_KEY", "from-env")
    args = build_parser().parse_args(["--port", "9000", "--state-dir", str(tmp_path)])
    config = load_config(args)
    assert config.port == 9000
    assert config.runtime == "qemu"
    assert config.api_key == "from-env"
    assert config.state_dir == tmp_path
    assert config.stop_vms_on_exit is False
    args = build_parser().parse_args(["--stop-vms-on-exit", "--runtime", "process"])
    config = load_config(args)
    assert config.stop_vms_on_exit is True
    assert config.runtime == "process"


def test_accel_flag_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_config(build_parser().parse_args([])).accel == "auto"
    monkeypatch.setenv("VIPER_ACCEL", "kvm")
    assert load_config(build_parser().parse_args([])).accel == "kvm"
    assert load_config(build_parser().parse_args(["--accel", "tcg"])).accel == "tcg"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--accel", "hvf"])


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("example.com", False)],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start(state: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    # Output goes to a file: a pipe nobody reads would fill up and block the server.
    with (state.parent / f"{state.name}-server.log").open("a") as log:
        return subprocess.Popen(
        [sys.executable, "-m", "viper_server", "--port", str(port), "--state-dir",
         str(state), "--runtime", "process", "--log-level", "DEBUG", *extra],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "VIPER_API_KEY": "", "VIPER_HOST": ""},
    )  # fmt: skip


async def _wait_healthy(
    session: aiohttp.ClientSession, base: str, proc: subprocess.Popen[str]
) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            async with session.get(f"{base}/healthz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        assert proc.poll() is None, f"server exited with {proc.returncode}"
        assert time.monotonic() < deadline, "server did not come up"
        await asyncio.sleep(0.1)


def _stop(proc: subprocess.Popen[str], state: Path) -> str:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    return (state.parent / f"{state.name}-server.log").read_text()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return (
        Path(f"/proc/{pid}").exists()
        and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    )


async def test_serves_and_shuts_down_on_sigterm_with_open_stream(tmp_path: Path) -> None:
    port = _free_port()
    proc = _start(tmp_path, port)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            await _wait_healthy(session, base, proc)
            stream = await session.get(f"{base}/api/v1/events")
            assert stream.status == 200
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert await stream.content.read() is not None  # the stream ends, not hangs
            code = proc.wait(timeout=15)
            assert code == 0
            assert time.monotonic() - started < 8, "an open SSE stream held up shutdown"
            stream.close()
    finally:
        output = _stop(proc, tmp_path)
    assert "default runtime: process" in output
    assert (tmp_path / "state.db").exists()


async def test_vms_outlive_a_graceful_stop_unless_asked(tmp_path: Path) -> None:
    """SIGTERM leaves the VM running for the next start; --stop-vms-on-exit destroys it."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    pid = None
    async with aiohttp.ClientSession() as session:
        proc = _start(tmp_path, port)
        try:
            await _wait_healthy(session, base, proc)
            async with session.post(f"{base}/api/v1/vms?wait=true", json={"name": "keep"}) as resp:
                vm = await resp.json()
                assert resp.status == 201, vm
            pid = vm["pid"]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0
            assert _alive(pid), "the VM was stopped with the server"

            proc = _start(tmp_path, port, "--stop-vms-on-exit")
            await _wait_healthy(session, base, proc)
            async with session.get(f"{base}/api/v1/vms/keep") as resp:
                adopted = await resp.json()
            assert adopted["status"] == "running", adopted
            assert adopted["pid"] == pid
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 0
            assert not _alive(pid), "--stop-vms-on-exit left the VM running"
        finally:
            _stop(proc, tmp_path)
            if pid is not None and _alive(pid):
                os.killpg(pid, signal.SIGKILL)
