"""The build stages of the guest image: kernel, init, initrd, base, wheels, rootfs, ext4.

Each stage is a function `(ctx) -> dict` that writes its outputs under `ctx.work / <stage>` and
returns facts for later stages and the manifest (versions, file names). Every output is written
to a temporary name and renamed into place, so a hard link to an earlier artefact never changes
under a running VM. The driver (`build.py`) decides which stages are stale by their keys.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import recipe


class BuildError(RuntimeError):
    """A stage failed; the message says what and where its log is."""


class Context:
    """Shared state of one build: directories, the stage log and the progress callback."""

    def __init__(self, work: Path, log: Callable[[str], None]) -> None:
        self.work = work
        self.say = log
        self.logfile: Path | None = None
        self.facts: dict[str, dict[str, str]] = {}

    def run(self, cmd: Sequence[str | Path], *, cwd: Path | None = None) -> str:
        """Runs a command, appending its output to the stage log; raises BuildError on failure."""
        argv = [str(c) for c in cmd]
        assert self.logfile is not None
        with self.logfile.open("a") as log:
            log.write("$ " + " ".join(argv) + "\n")
            log.flush()
            proc = subprocess.run(
                argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            log.write(proc.stdout)
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
            raise BuildError(f"{argv[0]} failed ({proc.returncode}), log {self.logfile}:\n{tail}")
        return proc.stdout


def fresh_dir(path: Path) -> Path:
    """An empty directory at `path` (removed first if present)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


# ---------------------------------------------------------------- kernel


def kernel_package() -> tuple[str, str]:
    """(package, version) the kernel meta package currently points at, from local apt lists."""
    out = subprocess.run(
        ["apt-cache", "depends", recipe.KERNEL_META_PACKAGE],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = re.search(r"Depends:\s+(linux-image-\S+)", out)
    if not m:
        raise BuildError(f"cannot resolve {recipe.KERNEL_META_PACKAGE}: {out.strip()}")
    pkg = m.group(1)
    policy = subprocess.run(["apt-cache", "policy", pkg], capture_output=True, text=True).stdout
    v = re.search(r"Candidate:\s+(\S+)", policy)
    return pkg, v.group(1) if v else "unknown"


def extract_vmlinux(bzimage: Path, out: Path) -> None:
    """Decompresses the ELF vmlinux from a bzImage (extract-vmlinux logic, LZ4 or XZ payload)."""
    data = bzimage.read_bytes()
    for magic, tool in ((b"\x02\x21\x4c\x18", ["lz4", "-dc"]), (b"\xfd7zXZ\x00", ["xz", "-dc"])):
        pos = data.find(magic)
        while pos != -1:
            proc = subprocess.run(tool, input=data[pos:], capture_output=True)
            if proc.stdout[:4] == b"\x7fELF":
                tmp = out.with_suffix(".tmp")
                tmp.write_bytes(proc.stdout)
                os.replace(tmp, out)
                return
            pos = data.find(magic, pos + 1)
    raise BuildError(f"no LZ4/XZ compressed ELF found in {bzimage}")


def stage_kernel(ctx: Context) -> dict[str, str]:
    """Debian's cloud kernel: bzImage, ELF vmlinux and the virtio/overlay modules."""
    pkg, _version = kernel_package()
    d = fresh_dir(ctx.work / "kernel")
    dl = d / "deb"
    dl.mkdir()
    try:
        ctx.run(["apt-get", "download", pkg], cwd=dl)
    except BuildError:
        ctx.say("apt lists look stale: apt-get update, then retry")
        ctx.run(["apt-get", "update", "-q"])
        pkg, _version = kernel_package()
        ctx.run(["apt-get", "download", pkg], cwd=dl)
    deb = next(dl.glob("*.deb"))
    ctx.run(["dpkg-deb", "-x", deb, d / "x"])
    kver = pkg.removeprefix("linux-image-")
    shutil.copy2(d / "x" / "boot" / f"vmlinuz-{kver}", d / "vmlinuz")
    ctx.say("extracting vmlinux-x86_64 (ELF, for Cloud Hypervisor)")
    extract_vmlinux(d / "vmlinuz", d / "vmlinux-x86_64")
    mods = d / "modules"
    mods.mkdir()
    tree = d / "x" / "lib" / "modules" / kver / "kernel"
    for name in recipe.MODULES:
        found = [
            p for p in tree.rglob("*.ko") if p.stem.replace("-", "_") == name.replace("-", "_")
        ]
        if not found:
            raise BuildError(f"module {name} not in {pkg}")
        shutil.copy2(found[0], mods / f"{name}.ko")
    shutil.rmtree(d / "x")
    shutil.rmtree(dl)
    return {"kernel_version": kver, "kernel_package": f"{pkg} {_version}"}


# ---------------------------------------------------------------- init and stage-1 initramfs


def stage_init(ctx: Context) -> dict[str, str]:
    """Compiles viper-init statically and checks it runs on the host."""
    d = fresh_dir(ctx.work / "init")
    out = d / "viper-init"
    ctx.run(["gcc", "-static", "-Os", "-Wall", "-Wextra", "-Werror", "-s", "-o", out,
             recipe.INIT_SOURCE])  # fmt: skip
    ctx.run([out, "--version"])
    return {}


def _cpio_entry(name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> bytes:
    ino = _cpio_entry.ino = getattr(_cpio_entry, "ino", 0) + 1  # type: ignore[attr-defined]
    nlink = 2 if mode & 0o170000 == 0o040000 else 1
    fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
    head = b"070701" + b"".join(b"%08X" % f for f in fields)
    entry = head + name.encode() + b"\0"
    entry += b"\0" * (-len(entry) % 4) + data
    return entry + b"\0" * (-len(entry) % 4)


def write_cpio(out: Path, dirs: list[str], files: dict[str, tuple[int, bytes]]) -> None:
    """A gzipped newc cpio with fixed owners and mtimes (reproducible) and /dev/console."""
    buf = io.BytesIO()
    for name in dirs:
        buf.write(_cpio_entry(name, 0o040755))
    buf.write(_cpio_entry("dev/console", 0o020600, rdev=(5, 1)))
    for name, (mode, data) in sorted(files.items()):
        buf.write(_cpio_entry(name, mode, data))
    buf.write(_cpio_entry("TRAILER!!!", 0))
    tmp = out.with_suffix(".tmp")
    with (
        tmp.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz,
    ):
        gz.write(buf.getvalue())
    os.replace(tmp, out)


def stage_initrd(ctx: Context) -> dict[str, str]:
    """Stage-1 initramfs: viper-init as /init, the modules and their load order."""
    d = fresh_dir(ctx.work / "initrd")
    mods = ctx.work / "kernel" / "modules"
    files = {"init": (0o100755, (ctx.work / "init" / "viper-init").read_bytes())}
    for name in recipe.MODULES:
        files[f"viper/modules/{name}.ko"] = (0o100644, (mods / f"{name}.ko").read_bytes())
    files["viper/modules.list"] = (0o100644, ("\n".join(recipe.MODULES) + "\n").encode())
    # Nothing under /lib: appended to the whole-rootfs initramfs, a "lib" directory entry would
    # replace Debian's /lib -> usr/lib symlink.
    dirs = ["dev", "proc", "sys", "mnt", "sysroot", "viper", "viper/modules"]
    write_cpio(d / "initrd.img", dirs, files)
    return {}


# ---------------------------------------------------------------- root filesystem


def _dpkg_version(root: Path, package: str) -> str:
    status = (root / "var" / "lib" / "dpkg" / "status").read_text()
    for block in status.split("\n\n"):
        if re.search(rf"^Package: {re.escape(package)}$", block, re.M):
            m = re.search(r"^Version: (\S+)", block, re.M)
            if m:
                return m.group(1)
    return "unknown"


def stage_base(ctx: Context) -> dict[str, str]:
    """mmdebstrap the Debian userland with Chromium and Python, then trim it."""
    tmp = ctx.work / "base.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    ctx.say(f"mmdebstrap {recipe.SUITE} with {len(recipe.PACKAGES)} packages (network)")
    cmd: list[str | Path] = [
        "mmdebstrap",
        "--variant=minbase",
        "--mode=root",
        '--aptopt=APT::Install-Recommends "false"',
        "--include=" + ",".join(recipe.PACKAGES),
    ]
    cmd += [f"--dpkgopt={opt}" for opt in recipe.DPKG_EXCLUDES]
    cmd += [recipe.SUITE, tmp, *recipe.MIRRORS]
    ctx.run(cmd)
    for rel in recipe.SLIM:
        p = tmp / rel
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
    (tmp / "var" / "log").mkdir(exist_ok=True)
    chromium = _dpkg_version(tmp, "chromium")
    python = _dpkg_version(tmp, "python3")
    out = ctx.work / "base"
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return {"chromium_version": chromium.split(":")[-1].split("-")[0], "python_version": python}


def stage_wheels(ctx: Context) -> dict[str, str]:
    """Wheels for the guest's CPython 3.11 (manylinux, glibc 2.36): agent, protocol, deps, pip."""
    d = fresh_dir(ctx.work / "wheels")
    pip = [os.environ.get("VIPER_BUILD_PYTHON", "python3"), "-m", "pip"]
    ctx.run([*pip, "wheel", "-q", "--no-deps", "-w", d, *recipe.AGENT_SOURCES])
    local = sorted(d.glob("*.whl"))
    platforms: list[str] = []
    for minor in (36, 35, 34, 31, 28, 27, 24, 17, 12, 5):
        platforms += ["--platform", f"manylinux_2_{minor}_x86_64"]
    platforms += ["--platform", "manylinux2014_x86_64", "--platform", "manylinux2010_x86_64"]
    target = ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
              "--abi", "cp311", *platforms]  # fmt: skip
    ctx.run([*pip, "download", "-q", "-d", d, "--find-links", d, *target, *local])
    pipdir = d / "pip"
    pipdir.mkdir()
    ctx.run([*pip, "download", "-q", "--no-deps", "-d", pipdir, *target, "pip"])
    agent = next(p for p in local if p.name.startswith("viper_agent-"))
    return {"agent_version": agent.name.split("-")[1]}


def stage_rootfs(ctx: Context) -> dict[str, str]:
    """Base tree + viper-init + the agent's venv installed offline inside the chroot."""
    out = ctx.work / "rootfs"
    tmp = ctx.work / "rootfs.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    ctx.run(["cp", "-a", "--reflink=auto", ctx.work / "base", tmp])
    wheels = tmp / "tmp" / "viper-wheels"
    shutil.copytree(ctx.work / "wheels", wheels)
    pip_whl = next((wheels / "pip").glob("pip-*.whl"))
    ctx.say("installing viper-agent into /opt/viper/venv (offline, in the chroot)")
    ctx.run(["chroot", tmp, "python3", "-m", "venv", "--without-pip", "/opt/viper/venv"])
    pip = f"/tmp/viper-wheels/pip/{pip_whl.name}/pip"  # pip runs from its wheel: none in the image
    ctx.run(["chroot", tmp, "/opt/viper/venv/bin/python", pip,
             "install", "-q", "--no-index", "--no-cache-dir", "--disable-pip-version-check",
             "--find-links", "/tmp/viper-wheels", "viper-agent"])  # fmt: skip
    ctx.run(["chroot", tmp, "/opt/viper/venv/bin/viper-agent", "--version"])
    shutil.rmtree(wheels)
    init = tmp / "sbin" / "viper-init"
    shutil.copy2(ctx.work / "init" / "viper-init", init)
    (tmp / "sbin" / "init").unlink(missing_ok=True)
    (tmp / "sbin" / "init").symlink_to("viper-init")
    for rel, text in (("etc/hostname", "viper\n"), ("etc/resolv.conf", "")):
        p = tmp / rel
        p.unlink(missing_ok=True)
        p.write_text(text)
    for rel in ("root", "var/tmp", "run", "tmp"):
        (tmp / rel).mkdir(exist_ok=True)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return {}


def stage_ext4(ctx: Context, key: str) -> dict[str, str]:
    """The read-only root: ext4 without journal, shrunk to its minimum, UUID fixed by the key."""
    d = ctx.work / "ext4"
    d.mkdir(exist_ok=True)
    src = ctx.work / "rootfs"
    used_kib = int(ctx.run(["du", "-sk", src]).split()[0])
    # mkfs -d needs room for metadata; unused blocks stay sparse in the file.
    size_mib = used_kib * 112 // 100 // 1024 + 48
    tmp = d / "rootfs.ext4.tmp"
    tmp.unlink(missing_ok=True)
    fs_uuid = str(uuid.UUID(hex=(key * 2)[:32]))
    ctx.run(["mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-m", "0", "-L", "viper-root",
             "-U", fs_uuid, "-E", f"root_owner=0:0,hash_seed={fs_uuid}", "-d", src, tmp,
             f"{size_mib}M"])  # fmt: skip
    ctx.run(["e2fsck", "-fn", tmp])
    os.replace(tmp, d / "rootfs.ext4")
    return {}


def stage_initramfs(ctx: Context) -> dict[str, str]:
    """Optional whole-rootfs initramfs (the seed's variant): the tree as a zstd cpio, then the
    stage-1 archive appended (the kernel unpacks concatenated archives in order), so /init is
    viper-init, which loads the modules, finds the agent already in / and skips stage 1.
    Slower to boot and needs >= 1.5 GiB of guest RAM (docs/image-pipeline.md), so not default.
    """
    d = fresh_dir(ctx.work / "initramfs")
    tmp = d / "viper-initramfs.cpio.zst.tmp"
    tree = ctx.work / "rootfs"
    with tmp.open("wb") as out:
        find = subprocess.Popen(["find", ".", "-print0"], cwd=tree, stdout=subprocess.PIPE)
        cpio = subprocess.Popen(
            ["cpio", "--null", "-o", "-H", "newc", "--quiet", "-R", "0:0"],
            cwd=tree,
            stdin=find.stdout,
            stdout=subprocess.PIPE,
        )
        zstd = subprocess.run(["zstd", "-q", "-3", "-T2", "-c"], stdin=cpio.stdout, stdout=out)
        if find.wait() or cpio.wait() or zstd.returncode:
            raise BuildError("find | cpio | zstd failed for the initramfs variant")
        out.write((ctx.work / "initrd" / "initrd.img").read_bytes())
    os.replace(tmp, d / "viper-initramfs.cpio.zst")
    return {}
