"""`viper system`: what the server's host can do (KVM, runtimes, image, capacity)."""

from __future__ import annotations

import click

from viper_cli.main import ClientContext, coroutine_command, pass_client
from viper_cli.output import print_fields, print_json, print_table
from viper_protocol.models.system import SystemInfo


@click.command("system")
@pass_client
@coroutine_command
async def system(ctx: ClientContext) -> None:
    """Show host capabilities: KVM, runtimes, guest image, capacity."""
    async with ctx.client() as client:
        info = await client.get("/api/v1/system", SystemInfo)
    if ctx.json_output:
        print_json(info)
        return
    cap = info.capacity
    print_fields(
        [
            ("version", info.version),
            ("kvm", f"{'usable' if info.kvm.usable else 'not usable'} ({info.kvm.accel})"),
            ("default runtime", info.default_runtime),
            ("image", info.image.path if info.image.present else f"absent ({info.image.path})"),
            ("vms", f"{cap.vms_running} running / {cap.vms_total} total (max {cap.max_vms})"),
            ("memory", f"{cap.memory_available_mb} MiB free of {cap.memory_total_mb}"),
            ("auth", "required" if info.auth_required else "off"),
        ]
    )
    print()
    print_table(
        ["RUNTIME", "AVAILABLE", "ISOLATED", "REASON"],
        [(r.name, r.available, r.isolated, r.reason) for r in info.runtimes],
    )
