"""Developer and CI sessions: lint, typecheck and tests per package, wheels, e2e.

`nox` with no arguments runs everything CI needs; `nox -l` lists the sessions. Sessions use
uv-made virtualenvs and editable installs of the local packages, so a package is always tested
against the protocol next to it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PACKAGES = ("viper-protocol", "viper-agent", "viper-server", "viper-cli")
# Local packages each package needs installed first (its pins name them, PyPI does not have them).
LOCAL_DEPS = {
    "viper-protocol": (),
    "viper-agent": ("viper-protocol",),
    "viper-server": ("viper-protocol", "viper-agent"),
    "viper-cli": ("viper-protocol",),
}
# What a package must NOT pull in when installed alone (DESIGN.md: repository layout).
FORBIDDEN = {
    "viper-cli": ("aiosqlite", "pyroute2", "aiohttp_sse", "viper_server", "viper_agent"),
    "viper-agent": ("click", "aiosqlite", "pyroute2", "viper_server", "viper_cli"),
    "viper-server": ("click", "viper_cli", "viper_agent"),
    "viper-protocol": ("aiohttp", "click", "aiosqlite"),
}
COMMANDS = {
    "viper-protocol": (),
    "viper-agent": ("viper-agent",),
    "viper-server": ("viper-server",),
    "viper-cli": ("viper",),
}
LINT_PATHS = ("packages", "scripts", "bench", "build/images", "noxfile.py")

nox.options.sessions = ["lint", "typecheck", "tests", "wheels", "e2e"]
nox.options.default_venv_backend = "uv"
nox.options.error_on_missing_interpreters = True
nox.options.reuse_existing_virtualenvs = True


def _install(session: nox.Session, package: str, *, extras: str = "test") -> None:
    for dep in LOCAL_DEPS[package]:
        session.install("-e", f"packages/{dep}")
    session.install("-e", f"packages/{package}[{extras}]" if extras else f"packages/{package}")


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint and format check over all Python in the repository."""
    session.install("ruff>=0.6")
    paths = [p for p in LINT_PATHS if (ROOT / p).exists()]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session
@nox.parametrize("package", PACKAGES)
def typecheck(session: nox.Session, package: str) -> None:
    """mypy --strict on one package's src and tests."""
    _install(session, package)
    session.install("mypy>=1.11")
    paths = [f"packages/{package}/src", f"packages/{package}/tests"]
    session.run("mypy", "--config-file", "mypy.ini", *paths)


@nox.session
@nox.parametrize("package", PACKAGES)
def tests(session: nox.Session, package: str) -> None:
    """pytest for one package, e.g. nox -s "tests(package='viper-server')"."""
    _install(session, package)
    session.run(
        "pytest",
        f"packages/{package}/tests",
        "-p",
        "no:cacheprovider",
        *session.posargs,
        env={"PYTHONDONTWRITEBYTECODE": "1"},
    )


@nox.session
def wheels(session: nox.Session) -> None:
    """Build the four wheels; install each alone in a fresh venv and check what it pulled in."""
    uv = shutil.which("uv", path=os.path.dirname(session.bin)) or shutil.which("uv")
    if uv is None:
        session.install("uv")
        uv = shutil.which("uv", path=session.bin)
    assert uv is not None
    with tempfile.TemporaryDirectory(prefix="viper-wheels-") as tmp:
        dist = Path(tmp) / "dist"
        for package in PACKAGES:
            session.run(uv, "build", "--wheel", "--out-dir", str(dist), f"packages/{package}")
        for package in PACKAGES:
            venv = Path(tmp) / package
            session.run(uv, "venv", "-q", str(venv))
            python = str(venv / "bin" / "python")
            session.run(
                uv, "pip", "install", "-q", "--python", python, "--find-links", str(dist), package
            )
            for command in COMMANDS[package]:
                session.run(str(venv / "bin" / command), "--version", external=True)
                session.run(str(venv / "bin" / command), "--help", silent=True, external=True)
            check = (
                "import importlib.util, sys\n"
                f"bad = [m for m in {FORBIDDEN[package]!r} if importlib.util.find_spec(m)]\n"
                "assert not bad, f'unexpected modules installed: {bad}'\n"
                f"import {package.replace('-', '_')}\n"
            )
            session.run(python, "-c", check, external=True)


@nox.session
def e2e(session: nox.Session) -> None:
    """Real microVMs: build (or reuse the cached) guest image, boot VMs under QEMU, drive them.

    Runs where it can: root, qemu-system-x86_64 and /dev/net/tun (everything happens inside
    network namespaces the tests make). KVM is used where it really runs guests, else TCG.
    The image is built once per hash of its inputs and cached outside the clone
    (build/images/ci-cache.sh, /var/cache/viper-images); VIPER_E2E=0 skips the session.
    """
    if os.environ.get("VIPER_E2E") == "0":
        session.skip("VIPER_E2E=0")
    missing = [
        what
        for what, ok in (
            ("root", os.geteuid() == 0),
            ("qemu-system-x86_64", shutil.which("qemu-system-x86_64") is not None),
            ("/dev/net/tun", Path("/dev/net/tun").exists()),
            ("ip (iproute2)", shutil.which("ip") is not None),
            ("mmdebstrap", shutil.which("mmdebstrap") is not None),
        )
        if not ok
    ]
    if missing:
        session.skip(f"needs {', '.join(missing)} to boot real microVMs")
    _install(session, "viper-server")
    images = ROOT / "build" / "artifacts"
    session.run("sh", "build/images/ci-cache.sh", "--link-to", str(images), external=True)
    session.run(
        "pytest",
        "packages/viper-server/tests",
        "-m",
        "vm",
        "-p",
        "no:cacheprovider",
        *session.posargs,
        env={"VIPER_E2E": "1", "VIPER_IMAGES": str(images)},
    )
