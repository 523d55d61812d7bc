"""`viper images` and `viper setup`: what the CLI does around the build pipeline and the server."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from viper_cli.__main__ import main

MANIFEST = {
    "kernel_version": "6.1.0-56-cloud-amd64",
    "chromium_version": "156.0.8078.79",
    "agent_version": "0.1.0",
    "built_at": "2026-11-24T17:29:53+00:00",
    "files": {"rootfs.ext4": "09b01bd4996a3402aa", "vmlinuz": "51349501a3d1ff83bb"},
}


def test_images_list_reads_the_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps(MANIFEST))
    (tmp_path / "vmlinuz").write_bytes(b"\0" * 2**20)
    assert main(["images", "list", "--images", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "156.0.8078.79" in out
    assert "1.0 MiB" in out
    assert "missing" in out  # rootfs.ext4 is in the manifest but not on disk


def test_images_list_without_an_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["images", "list", "--images", str(tmp_path)]) == 1
    assert "no image in" in capsys.readouterr().err


# A stand-in for build/images/build.py: the CLI is under test here, not the pipeline.
FAKE_BUILD = textwrap.dedent(
    """
    import json, sys
    out = sys.argv[sys.argv.index("--output") + 1]
    for stage in ("kernel", "rootfs"):
        print(json.dumps({"event": "stage", "elapsed": 0.1, "stage": stage, "state": "running"}))
        print(json.dumps({"event": "stage", "elapsed": 0.2, "stage": stage, "state": "done",
                          "seconds": 0.1}))
    ok = "--force" not in sys.argv
    print(json.dumps({"event": "result", "elapsed": 0.3, "ok": ok, "output": out,
                      "error": "" if ok else "forced failure"}))
    sys.exit(0 if ok else 1)
    """
)


def test_images_build_runs_the_pipeline_and_shows_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "src" / "build" / "images" / "build.py"
    script.parent.mkdir(parents=True)
    script.write_text(FAKE_BUILD)
    out_dir = tmp_path / "images"
    argv = ["images", "build", "--source", str(tmp_path / "src"), "--output", str(out_dir)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "kernel: done in 0.1s" in out
    assert f"image installed in {out_dir}" in out
    assert main([*argv, "--force", "rootfs"]) == 1
    assert "image build failed: forced failure" in capsys.readouterr().err


def test_images_build_needs_a_source_tree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VIPER_SOURCE", raising=False)
    monkeypatch.setattr("viper_cli.commands.images.INSTALLED_SOURCE", tmp_path / "nowhere")
    assert main(["images", "build", "--output", str(tmp_path / "x")]) == 1
    assert "cannot find the Viper source tree" in capsys.readouterr().err


def test_setup_hands_over_to_viper_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in viper-server on PATH that records its arguments.
    fake = tmp_path / "viper-server"
    record = tmp_path / "args.json"
    fake.write_text(
        "#!/bin/sh\n"
        f'python3 -c \'import json,sys; json.dump(sys.argv[1:], open("{record}", "w"))\' "$@"\n'
        "exit 3\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr("sys.executable", str(tmp_path / "no-python-here"))
    assert main(["setup", "--dry-run", "--subnet", "10.9.0.0/24"]) == 3
    assert json.loads(record.read_text()) == ["setup", "--dry-run", "--subnet", "10.9.0.0/24"]
    assert main(["setup", "--dry-run", "--teardown"]) == 2
    assert "exclude each other" in capsys.readouterr().err
