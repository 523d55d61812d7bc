"""`viper browsers`: drive a VM's browser (navigate, screenshot, dom, eval) and proxy DevTools."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click

from viper_cli.main import ClientContext, coroutine_command, pass_client
from viper_cli.output import print_fields, print_json
from viper_protocol.models.browser import (
    DomResult,
    EvaluateRequest,
    EvaluateResult,
    NavigateRequest,
    NavigationResult,
    WaitUntil,
)


@click.group()
def browsers() -> None:
    """Drive the browser of a VM."""


@browsers.command("navigate")
@click.argument("name")
@click.argument("url")
@click.option("--wait-until", type=click.Choice([w.value for w in WaitUntil]), default="load")
@click.option("--timeout-ms", type=int, default=30_000, show_default=True)
@pass_client
@coroutine_command
async def navigate(
    ctx: ClientContext, name: str, url: str, wait_until: str, timeout_ms: int
) -> None:
    """Load URL in VM NAME's browser."""
    req = NavigateRequest(url=url, wait_until=WaitUntil(wait_until), timeout_ms=timeout_ms)
    async with ctx.client() as client:
        result = await client.send("POST", f"/api/v1/vms/{name}/navigation", req, NavigationResult)
    if ctx.json_output:
        print_json(result)
    else:
        print_fields([("url", result.url), ("title", result.title), ("status", result.status)])


@browsers.command("screenshot")
@click.argument("name")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--full-page", is_flag=True)
@click.option("--format", "fmt", type=click.Choice(["png", "jpeg"]), default=None)
@click.option("--quality", type=click.IntRange(0, 100), default=None, help="JPEG only.")
@pass_client
@coroutine_command
async def screenshot(
    ctx: ClientContext,
    name: str,
    output: Path,
    full_page: bool,
    fmt: str | None,
    quality: int | None,
) -> None:
    """Save a screenshot of VM NAME's page to OUTPUT (format from the extension by default)."""
    fmt = fmt or ("jpeg" if output.suffix.lower() in (".jpg", ".jpeg") else "png")
    params = {"format": fmt, "full_page": "true" if full_page else "false"}
    if quality is not None:
        params["quality"] = str(quality)
    async with ctx.client() as client:
        data = await client.request("GET", f"/api/v1/vms/{name}/screenshot", params=params)
    await asyncio.to_thread(output.write_bytes, data)
    click.echo(f"wrote {output} ({len(data)} bytes, {fmt})", err=ctx.json_output)


@browsers.command("dom")
@click.argument("name")
@click.argument("selector")
@click.option("--format", "fmt", type=click.Choice(["html", "text", "attribute"]), default="text")
@click.option("--attr", "attr_name", default=None, help="Attribute name (with --format attribute).")
@click.option("--all", "all_matches", is_flag=True, help="Every match, not just the first.")
@pass_client
@coroutine_command
async def dom(
    ctx: ClientContext,
    name: str,
    selector: str,
    fmt: str,
    attr_name: str | None,
    all_matches: bool,
) -> None:
    """Read the element(s) matching SELECTOR."""
    params = {"selector": selector, "format": fmt, "all": "true" if all_matches else "false"}
    if attr_name:
        params["name"] = attr_name
    async with ctx.client() as client:
        result = await client.get(f"/api/v1/vms/{name}/dom", DomResult, params=params)
    if ctx.json_output:
        print_json(result)
    else:
        for value in result.values if all_matches else [result.value]:
            click.echo("" if value is None else value)


@browsers.command("eval")
@click.argument("name")
@click.argument("expression")
@click.option("--await", "await_promise", is_flag=True, help="Await a returned promise.")
@pass_client
@coroutine_command
async def evaluate(ctx: ClientContext, name: str, expression: str, await_promise: bool) -> None:
    """Evaluate a JavaScript EXPRESSION in the page and print its value as JSON."""
    req = EvaluateRequest(expression=expression, await_promise=await_promise)
    async with ctx.client() as client:
        result = await client.send(
            "POST", f"/api/v1/vms/{name}/script/evaluate", req, EvaluateResult
        )
    click.echo(json.dumps(result.value))


@browsers.command("proxy")
@click.argument("name")
@click.option("--port", type=int, default=9222, show_default=True, help="Local port (0: any).")
@click.option("--host", default="127.0.0.1", show_default=True)
@pass_client
@coroutine_command
async def proxy(ctx: ClientContext, name: str, port: int, host: str) -> None:
    """Serve VM NAME's DevTools on a local port, for tools that want localhost:9222."""
    from viper_cli.devtools_proxy import DevToolsProxy

    async with DevToolsProxy(ctx.api_base, ctx.api_key, name, host, port) as proxy:
        click.echo(f"DevTools of {name} at http://{host}:{proxy.port} (Ctrl-C to stop)")
        sys.stdout.flush()
        await asyncio.Event().wait()
