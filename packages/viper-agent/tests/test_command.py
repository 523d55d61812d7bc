"""The `viper-agent` command: flags and environment, and a clean stop on SIGTERM and SIGINT."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import CHROMIUM

COMMAND = shutil.which("viper-agent", path=os.path.dirname(sys.executable)) or shutil.which(
    "viper-agent"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _group(pgid: int) -> list[int]:
    """PIDs whose process group is `pgid` (Chromium and its helpers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def _zombies_of(ppid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == ppid and fields[0] == "Z":
                out.append(int(entry.name))
    return out


async def _wait_healthy(port: int, proc: asyncio.subprocess.Process) -> dict[str, object]:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            if proc.returncode is not None:
                raise AssertionError(f"viper-agent exited with {proc.returncode}")
            try:
                async with http.get(f"http://127.0.0.1:{port}/v1/health") as resp:
                    body: dict[str, object] = await resp.json()
                    browser = body["browser"]
                    assert isinstance(browser, dict)
                    if browser["status"] == "running":
                        return body
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("viper-agent never became healthy")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_agent_stops_cleanly(sig: signal.Signals) -> None:
    assert COMMAND is not None, "viper-agent is not installed"
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        COMMAND,
        "--port",
        str(port),
        "--chromium-arg=--lang=en-GB",
        env={**os.environ, "VIPER_AGENT_HOST": "127.0.0.1", "VIPER_AGENT_CHROMIUM": CHROMIUM},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        health = await _wait_healthy(port, proc)
        browser = health["browser"]
        assert isinstance(browser, dict)
        chromium = int(browser["pid"])
        cmdline = Path(f"/proc/{chromium}/cmdline").read_bytes().split(b"\0")
        assert b"--lang=en-GB" in cmdline
        profile = next(a for a in cmdline if a.startswith(b"--user-data-dir=")).split(b"=", 1)[1]
        assert Path(profile.decode()).is_dir()
        assert len(_group(chromium)) > 1  # Chromium runs helpers in its own process group
        # Open clients must not hold up the stop: a log stream and a proxied DevTools socket.
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{port}"
            stream = await http.get(f"{base}/v1/logs/stream")
            assert stream.status == 200
            devtools = await (await http.get(f"{base}/v1/devtools")).json()
            ws = await http.ws_connect(f"ws://127.0.0.1:{port}{devtools['websocket_path']}")
            proc.send_signal(sig)
            async with asyncio.timeout(15):
                code = await proc.wait()
                closed = await ws.receive()
                assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
                assert await stream.content.read() is not None
            stream.close()
        assert code == 0
        assert _group(chromium) == []
        assert not Path(profile.decode()).exists()
        assert _zombies_of(proc.pid) == []
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_help_version_and_bad_settings() -> None:
    assert COMMAND is not None
    out = subprocess.run([COMMAND, "--help"], capture_output=True, text=True, check=True).stdout
    for flag in ("--host", "--port", "--chromium", "--chromium-arg", "VIPER_AGENT_PORT"):
        assert flag in out
    version = subprocess.run([COMMAND, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("viper-agent ")
    bad = subprocess.run(
        [COMMAND],
        capture_output=True,
        text=True,
        env={**os.environ, "VIPER_AGENT_PORT": "eighty"},
        check=False,
    )
    assert bad.returncode != 0
    assert "VIPER_AGENT_PORT" in bad.stderr


async def test_missing_chromium_fails_to_start_cleanly() -> None:
    assert COMMAND is not None
    proc = await asyncio.create_subprocess_exec(
        COMMAND,
        "--port",
        str(_free_port()),
        "--chromium",
        "/nonexistent/chromium",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(15):
        _, err = await proc.communicate()
    assert proc.returncode != 0
    assert b"/nonexistent/chromium" in err
