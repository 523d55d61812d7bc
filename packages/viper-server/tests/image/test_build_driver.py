"""The image build driver (build/images/build.py): JSON progress, incremental stamps, cache key.

Runs the real driver on its cheapest stage (`init`: gcc only, no network) in a temporary work
directory; the full build is exercised by CI through ci-cache.sh and by test_boot.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO

BUILD = REPO / "build" / "images" / "build.py"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the image build needs root")


def drive(*args: str) -> tuple[int, list[dict[str, Any]]]:
    """Exit code and the JSON progress events of one driver run."""
    proc = subprocess.run(
        [sys.executable, str(BUILD), "--progress", "json", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()]


def states(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["stage"], e["state"]) for e in events if e["event"] == "stage"]


def test_stage_runs_once_then_is_cached_until_forced(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "artifacts"
    args = ("--work", str(work), "--artifacts", str(out), "--stage", "init")
    code, events = drive(*args)
    assert code == 0, events
    assert states(events) == [("init", "running"), ("init", "done")]
    assert events[-1]["event"] == "result"
    assert events[-1]["ok"] is True
    assert all(isinstance(e["elapsed"], float | int) for e in events)
    binary = work / "init" / "viper-init"
    assert subprocess.run([str(binary), "--version"], capture_output=True).returncode == 0
    stamp = json.loads((work / "stamps" / "init.json").read_text())
    assert stamp["key"] == events[0]["key"]

    code, events = drive(*args)
    assert code == 0
    assert states(events) == [("init", "cached")]

    code, events = drive(*args, "--force", "init")
    assert code == 0
    assert states(events) == [("init", "running"), ("init", "done")]
    assert not out.exists(), "a partial build installs nothing"


def test_print_key_is_stable_and_names_the_ci_cache_entry() -> None:
    keys = {
        subprocess.run(
            [sys.executable, str(BUILD), "--print-key"], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(keys) == 1
    key = keys.pop()
    assert len(key) == 20
    assert int(key, 16) >= 0


def test_unknown_stage_is_refused() -> None:
    proc = subprocess.run(
        [sys.executable, str(BUILD), "--stage", "nope"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr
