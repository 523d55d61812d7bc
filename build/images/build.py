#!/usr/bin/env python3
"""Build driver of the Viper guest image (stdlib only): stages, incremental keys, progress, install.

    python3 build/images/build.py [--output DIR] [--work DIR] [--stage NAME ...] [--force NAME ...]
                                  [--progress text|json] [--print-key]

Stages and what their key hashes (a stage reruns when its key or any dependency's key changed):

    kernel  Debian cloud kernel package + version      -> vmlinuz, vmlinux-x86_64, 18 modules
    init    viper-init.c + gcc version                  -> static viper-init
    initrd  kernel + init + module list                 -> initrd.img (stage 1, about 1.4 MB)
    base    suite, mirrors, package list, trims         -> trimmed Debian tree (mmdebstrap)
    wheels  viper-protocol + viper-agent sources        -> wheels for the guest's CPython 3.11
    rootfs  base + wheels + init                        -> tree + /opt/viper/venv + viper-init
    ext4    rootfs                                      -> rootfs.ext4 (read-only, no journal)
    initramfs  rootfs + initrd (opt-in: --stage initramfs) -> viper-initramfs.cpio.zst

Artefacts land in build/artifacts/ (hard links into the work dir) with SHA256SUMS and
manifest.json (`viper_protocol.models.system.ImageManifest`); `--output DIR` also copies them
there. With `--progress json` every line on stdout is one JSON object: `{"event": "stage", ...}`,
`{"event": "log", ...}`, and last `{"event": "result", "ok": ..., ...}`. Needs root (mmdebstrap,
chroot).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import recipe
import stages

DEPS: dict[str, tuple[str, ...]] = {
    "kernel": (),
    "init": (),
    "initrd": ("kernel", "init"),
    "base": (),
    "wheels": (),
    "rootfs": ("base", "wheels", "init"),
    "ext4": ("rootfs",),
    "initramfs": ("rootfs", "initrd"),
}
ORDER = ("kernel", "init", "initrd", "base", "wheels", "rootfs", "ext4", "initramfs")
# What a plain build makes; the whole-rootfs initramfs is opt-in (slower, needs more RAM).
DEFAULT_TARGETS = ("kernel", "init", "initrd", "base", "wheels", "rootfs", "ext4")
# name in the output dir -> path in the work dir
ARTEFACTS = {
    "vmlinuz": "kernel/vmlinuz",
    "vmlinux-x86_64": "kernel/vmlinux-x86_64",
    "initrd.img": "initrd/initrd.img",
    "rootfs.ext4": "ext4/rootfs.ext4",
}
OPTIONAL_ARTEFACTS = {"viper-initramfs.cpio.zst": "initramfs/viper-initramfs.cpio.zst"}
DEFAULT_OUTPUT = recipe.REPO / "build" / "artifacts"
DEFAULT_WORK = recipe.REPO / "build" / "work"


def own_inputs(stage: str) -> list[object]:
    """What a stage's own key is made of (dependencies' keys are added by `stage_keys`)."""
    common: list[object] = [stage, recipe.RECIPE_VERSION[stage]]
    if stage == "kernel":
        return [*common, stages.kernel_package(), recipe.MODULES]
    if stage == "init":
        gcc = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout
        return [*common, recipe.file_digest(recipe.INIT_SOURCE), gcc.splitlines()[:1]]
    if stage == "initrd":
        return [*common, recipe.MODULES, recipe.file_digest(Path(stages.__file__))]
    if stage == "base":
        # VIPER_IMAGE_EPOCH (e.g. the ISO week in CI) forces a fresh mmdebstrap now and then, so
        # Debian security updates (Chromium!) reach the image although the recipe did not change.
        epoch = os.environ.get("VIPER_IMAGE_EPOCH", "")
        return [*common, epoch, recipe.SUITE, recipe.MIRRORS, recipe.PACKAGES, recipe.DPKG_EXCLUDES,
                recipe.SLIM]  # fmt: skip
    if stage == "wheels":
        return [*common, *(recipe.tree_digest(p) for p in recipe.AGENT_SOURCES)]
    return common


def stage_keys() -> dict[str, str]:
    """Key of every stage: its own inputs plus the keys of the stages it consumes."""
    keys: dict[str, str] = {}
    for name in ORDER:
        keys[name] = recipe.digest(own_inputs(name), [keys[d] for d in DEPS[name]])
    return keys


def image_key(keys: dict[str, str]) -> str:
    """One hash over the default stages' keys: the CI cache key of a complete image."""
    return recipe.digest({k: keys[k] for k in DEFAULT_TARGETS})


class Progress:
    """Progress lines: human text on stderr, or one JSON object per line on stdout."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.t0 = time.monotonic()

    def emit(self, event: str, **fields: Any) -> None:
        elapsed = round(time.monotonic() - self.t0, 2)
        if self.mode == "json":
            print(json.dumps({"event": event, "elapsed": elapsed, **fields}), flush=True)
            return
        if event == "stage":
            took = f" ({fields['seconds']:.1f}s)" if "seconds" in fields else ""
            line = f"{fields['stage']}: {fields['state']}{took}"
        elif event == "result":
            line = "done: " + fields["output"] if fields["ok"] else "FAILED: " + fields["error"]
        else:
            line = f"  {fields.get('stage', '')}: {fields['message']}"
        print(f"[{elapsed:7.1f}s] {line}", file=sys.stderr, flush=True)


def load_stamp(work: Path, stage: str) -> dict[str, Any] | None:
    p = work / "stamps" / f"{stage}.json"
    try:
        data: dict[str, Any] = json.loads(p.read_text())
        return data
    except (OSError, ValueError):
        return None


def save_stamp(work: Path, stage: str, key: str, facts: dict[str, str]) -> None:
    d = work / "stamps"
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f"{stage}.json.tmp"
    tmp.write_text(json.dumps({"key": key, "facts": facts, "at": time.time()}, indent=1))
    os.replace(tmp, d / f"{stage}.json")


def wanted(targets: list[str]) -> list[str]:
    """The targets and everything they need, in build order."""
    need: set[str] = set()

    def add(s: str) -> None:
        if s not in need:
            need.add(s)
            for d in DEPS[s]:
                add(d)

    for t in targets:
        add(t)
    return [s for s in ORDER if s in need]


def run_stages(
    work: Path, targets: list[str], force: set[str], progress: Progress
) -> dict[str, Any]:
    """Builds the stale stages among `targets` (and their dependencies); returns merged facts."""
    keys = stage_keys()
    facts: dict[str, Any] = {}
    rebuilt: set[str] = set()
    ctx = stages.Context(work, lambda m: None)
    for name in wanted(targets):
        stamp = load_stamp(work, name)
        fresh = (
            stamp is not None
            and stamp.get("key") == keys[name]
            and name not in force
            and not any(d in rebuilt for d in DEPS[name])
        )
        if fresh and stamp is not None:
            facts.update(stamp.get("facts", {}))
            progress.emit("stage", stage=name, state="cached", key=keys[name])
            continue
        progress.emit("stage", stage=name, state="running", key=keys[name])
        (work / "logs").mkdir(parents=True, exist_ok=True)
        ctx.logfile = work / "logs" / f"{name}.log"
        ctx.logfile.write_text("")
        ctx.say = lambda m, n=name: progress.emit("log", stage=n, message=m)  # type: ignore[misc]
        (work / "stamps" / f"{name}.json").unlink(missing_ok=True)
        started = time.monotonic()
        fn: Callable[..., dict[str, str]] = getattr(stages, f"stage_{name}")
        out = fn(ctx, keys[name]) if name == "ext4" else fn(ctx)
        save_stamp(work, name, keys[name], out)
        rebuilt.add(name)
        facts.update(out)
        progress.emit(
            "stage", stage=name, state="done", seconds=round(time.monotonic() - started, 1)
        )
    return facts


def artefacts(work: Path, targets: list[str]) -> dict[str, str]:
    """Output name -> work path of what this build installs."""
    found = dict(ARTEFACTS)
    if "initramfs" in targets:
        found.update(OPTIONAL_ARTEFACTS)
    return found


def checksums(work: Path, files: dict[str, str]) -> dict[str, str]:
    """sha256 of every artefact, cached by (size, mtime, inode) in the work dir."""
    cache_path = work / "stamps" / "sha256.json"
    try:
        cache: dict[str, Any] = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    sums = {}
    for name, rel in files.items():
        p = work / rel
        st = p.stat()
        ident = [st.st_size, st.st_mtime_ns, st.st_ino]
        hit = cache.get(rel)
        if hit and hit[0] == ident:
            sums[name] = hit[1]
        else:
            sums[name] = recipe.file_digest(p)
            cache[rel] = [ident, sums[name]]
    cache_path.write_text(json.dumps(cache))
    return sums


def install(
    work: Path, dest: Path, files: dict[str, str], manifest: dict[str, Any], *, link: bool
) -> None:
    """Puts the artefacts, SHA256SUMS and manifest.json in `dest`; manifest.json goes last."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, rel in files.items():
        if (dest / name).exists() and os.path.samefile(work / rel, dest / name):
            continue  # already this very file (rename(2) of a link onto itself is a no-op)
        tmp = dest / f".{name}.tmp"
        tmp.unlink(missing_ok=True)
        try:
            if not link:
                raise OSError("copy requested")
            os.link(work / rel, tmp)
        except OSError:
            # cp keeps the ext4 image sparse (about 150 MB of it is unused blocks)
            subprocess.run(["cp", "--sparse=always", str(work / rel), str(tmp)], check=True)
        os.replace(tmp, dest / name)
    # Written to new files and renamed: the old ones may be hard links into a cache.
    sums = "".join(f"{h}  {n}\n" for n, h in sorted(manifest["files"].items()))
    for name, text in (("SHA256SUMS", sums), ("manifest.json", json.dumps(manifest, indent=2))):
        tmp = dest / f".{name}.tmp"
        tmp.unlink(missing_ok=True)
        tmp.write_text(text if name == "SHA256SUMS" else text + "\n")
        os.replace(tmp, dest / name)
    for stale in set(OPTIONAL_ARTEFACTS) - set(files):
        (dest / stale).unlink(missing_ok=True)


def build(
    *,
    work: Path,
    outputs: list[Path],
    targets: list[str],
    force: set[str],
    progress: Progress,
) -> dict[str, Any]:
    """Runs the stages and, for a full build, installs the artefacts. Returns the manifest."""
    facts = run_stages(work, targets, force, progress)
    if not set(DEFAULT_TARGETS) <= set(wanted(targets)):
        return {}
    files = artefacts(work, targets)
    sums = checksums(work, files)
    built = load_stamp(work, "ext4")
    built_at = datetime.fromtimestamp(built["at"] if built else time.time(), UTC)
    manifest = {
        "kernel_version": facts["kernel_version"],
        "chromium_version": facts["chromium_version"],
        "agent_version": facts["agent_version"],
        "built_at": built_at.isoformat(),
        "files": sums,
    }
    for i, dest in enumerate(outputs):
        install(work, dest, files, manifest, link=i == 0)
        progress.emit("log", stage="install", message=f"installed in {dest}")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the Viper guest image.")
    parser.add_argument("--output", type=Path, action="append", default=[],
                        help="also copy the artefacts here, e.g. ~/.viper/images")  # fmt: skip
    parser.add_argument("--artifacts", type=Path, default=DEFAULT_OUTPUT,
                        help="where artefacts are hard-linked (default %(default)s)")  # fmt: skip
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="work/cache directory")
    parser.add_argument("--stage", action="append", choices=ORDER, default=[],
                        help="build this stage and what it needs (repeatable; default: all "
                        "but initramfs; `--stage ext4 --stage initramfs` adds it)")  # fmt: skip
    parser.add_argument("--force", action="append", choices=ORDER, default=[],
                        help="rebuild this stage even if its key is unchanged")  # fmt: skip
    parser.add_argument("--progress", choices=("text", "json"), default="text")
    parser.add_argument("--print-key", action="store_true",
                        help="print the image's input hash (CI cache key) and exit")  # fmt: skip
    args = parser.parse_args(argv)
    if args.print_key:
        print(image_key(stage_keys()))
        return 0
    progress = Progress(args.progress)
    if os.geteuid() != 0:
        progress.emit("result", ok=False, error="needs root (mmdebstrap, chroot)", output="")
        return 1
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    outputs = [args.artifacts.resolve(), *(p.expanduser().resolve() for p in args.output)]
    try:
        manifest = build(
            work=work,
            outputs=outputs,
            targets=args.stage or list(DEFAULT_TARGETS),
            force=set(args.force),
            progress=progress,
        )
    except (stages.BuildError, OSError, subprocess.CalledProcessError) as exc:
        progress.emit("result", ok=False, error=str(exc), output="")
        return 1
    progress.emit("result", ok=True, output=str(outputs[0]), manifest=manifest,
                  key=image_key(stage_keys()))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
