"""The server's check of the installed guest image (reported in /api/v1/system)."""

from __future__ import annotations

import json
from pathlib import Path

from viper_server.orchestrator.system import image_info

MANIFEST = {
    "kernel_version": "6.1.0-56-cloud-amd64",
    "chromium_version": "156.0.8078.79",
    "agent_version": "0.1.0",
    "built_at": "2026-11-24T17:29:53+00:00",
    "files": {"vmlinuz": "aa", "rootfs.ext4": "bb"},
}


def test_no_manifest(tmp_path: Path) -> None:
    info = image_info(tmp_path)
    assert not info.present
    assert info.problem is not None
    assert "manifest.json is missing" in info.problem


def test_invalid_manifest(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"kernel_version": 6}))
    info = image_info(tmp_path)
    assert not info.present
    assert info.problem is not None
    assert "is invalid" in info.problem


def test_manifest_lists_a_missing_file(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps(MANIFEST))
    (tmp_path / "vmlinuz").write_bytes(b"k")
    info = image_info(tmp_path)
    assert not info.present
    assert info.problem == "listed in manifest.json but missing: rootfs.ext4"
    assert info.manifest is not None
    assert info.manifest.chromium_version == "156.0.8078.79"


def test_complete_image(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps(MANIFEST))
    for name in MANIFEST["files"]:
        (tmp_path / name).write_bytes(b"x")
    info = image_info(tmp_path)
    assert info.present
    assert info.problem is None
