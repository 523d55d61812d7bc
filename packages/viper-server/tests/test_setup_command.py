"""`viper-server setup --dry-run`: the preflight and plan behind `viper setup`, changing nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_setup_dry_run_prints_checks_and_plan(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "viper_server", "setup", "--dry-run", "--images", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "tun" in out
    assert f"{tmp_path}: missing" in out
    assert "would set up:" in out
    assert "bridge viperbr0 up with address 192.168.127.1/24" in out
    assert "masquerade" in out


def test_setup_rejects_bad_arguments() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "viper_server", "setup", "--subnet", "not-a-net"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "viper-server setup" in result.stderr
