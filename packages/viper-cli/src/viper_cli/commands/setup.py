"""`viper setup`: preflight and host networking for microVMs, run on the server's host.

It runs `viper-server setup`, which checks KVM (probed), tun, the VMM binaries and the guest
image, then creates the bridge, forwarding and the nftables NAT/isolation table (root
needed). Host networking belongs to the server package (pyroute2), which the CLI does not
depend on, so the CLI hands over to the installed server command instead of an HTTP call:
setting up a host's network is not something to expose over the API.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import click


def find_server_command() -> str:
    """The `viper-server` command on this host.

    Raises:
        click.ClickException: viper-server is not installed here.
    """
    beside = Path(sys.executable).with_name("viper-server")
    found = str(beside) if beside.exists() else shutil.which("viper-server")
    if found is None:
        raise click.ClickException(
            "viper setup runs on the server's host and needs viper-server installed"
            " (scripts/install.sh)"
        )
    return found


@click.command("setup")
@click.option("--dry-run", is_flag=True, help="Print the checks and the plan, change nothing.")
@click.option("--teardown", is_flag=True, help="Remove the bridge, taps and rules.")
@click.option("--subnet", default=None, help="Guest subnet [default: 192.168.127.0/24].")
@click.option("--images", type=click.Path(file_okay=False), default=None)
def setup(dry_run: bool, teardown: bool, subnet: str | None, images: str | None) -> None:
    """Check this host for microVMs and set up (or tear down) their network."""
    if dry_run and teardown:
        raise click.UsageError("--dry-run and --teardown exclude each other")
    argv = [find_server_command(), "setup"]
    if dry_run:
        argv.append("--dry-run")
    if teardown:
        argv.append("--teardown")
    if subnet:
        argv += ["--subnet", subnet]
    if images or os.environ.get("VIPER_IMAGES"):
        argv += ["--images", images or os.environ["VIPER_IMAGES"]]
    code = subprocess.call(argv)
    if code != 0:
        raise click.exceptions.Exit(code)
