"""`viper images`: build the guest image the microVM runtimes boot, and show what is installed.

The build runs the repository's pipeline (`build/images/build.py`, no docker; root needed)
and shows its progress; the result is installed where the server looks by default
(`~/.viper/images`). The source tree is found from `--source`, `$VIPER_SOURCE`, the current
directory and its parents, then `/opt/viper/src` (where `scripts/install.sh` puts it).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import click

from viper_cli.main import ClientContext, coroutine_command, pass_client
from viper_cli.output import print_fields, print_json, print_table

BUILD_SCRIPT = Path("build") / "images" / "build.py"
INSTALLED_SOURCE = Path("/opt/viper/src")


def default_images_dir() -> Path:
    """Where the server looks for the image unless told otherwise."""
    env = os.environ.get("VIPER_IMAGES")
    return Path(env).expanduser() if env else Path.home() / ".viper" / "images"


def find_source(explicit: Path | None) -> Path:
    """The directory holding `build/images/build.py`.

    Raises:
        click.ClickException: no source tree is found.
    """
    candidates: list[Path] = []
    if explicit is not None:
        candidates.append(explicit)
    if os.environ.get("VIPER_SOURCE"):
        candidates.append(Path(os.environ["VIPER_SOURCE"]))
    cwd = Path.cwd()
    candidates.extend([cwd, *cwd.parents, INSTALLED_SOURCE])
    for candidate in candidates:
        if (candidate / BUILD_SCRIPT).is_file():
            return candidate.resolve()
    raise click.ClickException(
        "cannot find the Viper source tree (build/images/build.py): run from a checkout,"
        " pass --source or set VIPER_SOURCE"
    )


@click.group()
def images() -> None:
    """Build and inspect the microVM guest image."""


@images.command("build")
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Install the image here [default: $VIPER_IMAGES or ~/.viper/images].",
)
@click.option("--source", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--force", "force", multiple=True, help="Rebuild this stage even if unchanged.")
@pass_client
@coroutine_command
async def build(
    ctx: ClientContext, output: Path | None, source: Path | None, force: tuple[str, ...]
) -> None:
    """Build the guest image (kernel, rootfs with Chromium and the agent, viper-init)."""
    src = find_source(source)
    dest = (output or default_images_dir()).expanduser()
    argv = [sys.executable, str(src / BUILD_SCRIPT), "--output", str(dest), "--progress", "json"]
    for stage in force:
        argv += ["--force", stage]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, cwd=src)
    assert proc.stdout is not None
    result: dict[str, object] = {}
    async for raw in proc.stdout:
        try:
            event = json.loads(raw)
        except ValueError:
            continue
        if ctx.json_output:
            click.echo(raw.decode().rstrip())
        kind = event.get("event")
        if kind == "result":
            result = event
        elif not ctx.json_output and kind == "stage":
            took = f" in {event['seconds']:.1f}s" if "seconds" in event else ""
            click.echo(f"[{event['elapsed']:7.1f}s] {event['stage']}: {event['state']}{took}")
        elif not ctx.json_output and kind == "log":
            click.echo(f"[{event['elapsed']:7.1f}s]   {event.get('message', '')}", err=True)
    code = await proc.wait()
    if code != 0 or not result.get("ok"):
        raise click.ClickException(f"image build failed: {result.get('error') or f'exit {code}'}")
    if not ctx.json_output:
        click.echo(f"image installed in {dest}")


@images.command("list")
@click.option(
    "--images",
    "images_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="[default: $VIPER_IMAGES or ~/.viper/images]",
)
@pass_client
def list_images(ctx: ClientContext, images_dir: Path | None) -> None:
    """Show the installed guest image: versions from its manifest and its files."""
    directory = (images_dir or default_images_dir()).expanduser()
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise click.ClickException(f"no image in {directory} (run: viper images build)")
    manifest = json.loads(manifest_path.read_text())
    if ctx.json_output:
        print_json({"path": str(directory), "manifest": manifest})
        return
    print_fields(
        [
            ("path", directory),
            ("kernel", manifest.get("kernel_version")),
            ("chromium", manifest.get("chromium_version")),
            ("agent", manifest.get("agent_version")),
            ("built", manifest.get("built_at")),
        ]
    )
    print()
    rows = []
    for name, digest in sorted(manifest.get("files", {}).items()):
        path = directory / name
        size = f"{path.stat().st_size / 2**20:.1f} MiB" if path.exists() else "missing"
        rows.append((name, size, str(digest)[:16]))
    print_table(["FILE", "SIZE", "SHA256"], rows)
