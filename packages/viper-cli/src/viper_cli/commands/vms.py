"""`viper vms`: list, create, get, delete, watch and logs of VMs."""

from __future__ import annotations

import json

import click

from viper_cli.main import ClientContext, coroutine_command, pass_client
from viper_cli.output import print_fields, print_json, print_table
from viper_protocol.converter import converter
from viper_protocol.models.events import Event, UnknownEvent
from viper_protocol.models.vms import VM, CreateVMRequest, RuntimeName, VMList, VMStatus


@click.group()
def vms() -> None:
    """Create, inspect and destroy browser VMs."""


def _show(ctx: ClientContext, vm: VM) -> None:
    if ctx.json_output:
        print_json(vm)
        return
    print_fields(
        [
            ("name", vm.name),
            ("id", vm.id),
            ("status", vm.status),
            ("runtime", f"{vm.runtime}{'' if vm.isolated else ' (not isolated)'}"),
            ("resources", f"{vm.cpu_cores} cpu, {vm.memory_mb} MiB"),
            ("ip", vm.ip),
            ("mac", vm.mac),
            ("pid", vm.pid),
            ("labels", ",".join(f"{k}={v}" for k, v in vm.labels.items()) or None),
            ("created", vm.created_at.isoformat(timespec="seconds")),
            ("expires", vm.expires_at.isoformat(timespec="seconds") if vm.expires_at else None),
            ("devtools", vm.devtools.http_url if vm.devtools else None),
            ("message", vm.message),
        ]
    )


@vms.command("list")
@click.option("--status", type=click.Choice([s.value for s in VMStatus]), default=None)
@pass_client
@coroutine_command
async def list_vms(ctx: ClientContext, status: str | None) -> None:
    """List VMs (optionally only those with STATUS)."""
    async with ctx.client() as client:
        result = await client.get(
            "/api/v1/vms", VMList, params={"status": status} if status else None
        )
    if ctx.json_output:
        print_json(result)
        return
    print_table(
        ["NAME", "STATUS", "RUNTIME", "CPU", "MEM", "IP", "CREATED"],
        [
            (
                vm.name,
                vm.status,
                vm.runtime,
                vm.cpu_cores,
                vm.memory_mb,
                vm.ip,
                vm.created_at.isoformat(timespec="seconds"),
            )
            for vm in result.vms
        ],
    )


@vms.command("create")
@click.argument("name")
@click.option("--cpu", "cpu_cores", type=int, default=1, show_default=True)
@click.option("--memory", "memory_mb", type=int, default=512, show_default=True, help="MiB.")
@click.option("--runtime", type=click.Choice([r.value for r in RuntimeName]), default=None)
@click.option("--label", "labels", multiple=True, help="key=value; repeatable.")
@click.option("--ttl", "ttl_seconds", type=int, default=None, help="Destroy after N seconds.")
@click.option("--idle-timeout", "idle_timeout_seconds", type=int, default=None)
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until ready.")
@pass_client
@coroutine_command
async def create_vm(
    ctx: ClientContext,
    name: str,
    cpu_cores: int,
    memory_mb: int,
    runtime: str | None,
    labels: tuple[str, ...],
    ttl_seconds: int | None,
    idle_timeout_seconds: int | None,
    wait: bool,
) -> None:
    """Create VM NAME with its own browser."""
    try:
        req = CreateVMRequest.from_cli_args(
            name,
            cpu_cores=cpu_cores,
            memory_mb=memory_mb,
            runtime=runtime,
            labels=labels,
            ttl_seconds=ttl_seconds,
            idle_timeout_seconds=idle_timeout_seconds,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    async with ctx.client() as client:
        params = {"wait": "true"} if wait else None
        vm = await client.send("POST", "/api/v1/vms", req, VM, params=params)
    _show(ctx, vm)


@vms.command("get")
@click.argument("name")
@pass_client
@coroutine_command
async def get_vm(ctx: ClientContext, name: str) -> None:
    """Show one VM."""
    async with ctx.client() as client:
        vm = await client.get(f"/api/v1/vms/{name}", VM)
    _show(ctx, vm)


@vms.command("delete")
@click.argument("names", nargs=-1, required=True)
@pass_client
@coroutine_command
async def delete_vm(ctx: ClientContext, names: tuple[str, ...]) -> None:
    """Destroy VMs: stop them and release everything they held."""
    async with ctx.client() as client:
        for name in names:
            vm = await client.send("DELETE", f"/api/v1/vms/{name}", None, VM)
            if ctx.json_output:
                print_json(vm)
            else:
                click.echo(f"deleted {vm.name} ({vm.status})")


@vms.command("watch")
@click.option("--vm", "vm_name", default=None, help="Only events of this VM.")
@pass_client
@coroutine_command
async def watch(ctx: ClientContext, vm_name: str | None) -> None:
    """Stream lifecycle events until interrupted."""
    async with ctx.client(timeout=None) as client:
        async for _, _, data in client.sse("/api/v1/events"):
            event: Event | UnknownEvent = converter.structure(json.loads(data), Event)  # type: ignore[arg-type]
            if vm_name and event.vm != vm_name:
                continue
            if ctx.json_output:
                click.echo(data)
            else:
                stamp = event.timestamp.isoformat(timespec="seconds")
                click.echo(f"{stamp}  {event.type:<12} {event.vm:<20} {event.message}")


@vms.command("logs")
@click.argument("name")
@pass_client
@coroutine_command
async def logs(ctx: ClientContext, name: str) -> None:
    """Follow a VM's browser log: console, page errors, network, browser and agent lines."""
    async with ctx.client(timeout=None) as client:
        async for _, _, data in client.sse(f"/api/v1/vms/{name}/logs"):
            if ctx.json_output:
                click.echo(data)
                continue
            entry = json.loads(data)
            click.echo(
                f"{entry.get('timestamp', '')[11:19]}  {entry.get('source', ''):<10} "
                f"{entry.get('level', ''):<7} {entry.get('message', '')}"
            )
