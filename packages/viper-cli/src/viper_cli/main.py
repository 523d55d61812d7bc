"""The root `viper` click group: global options and the client context commands share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import attrs
import click

from viper_cli import __version__
from viper_cli.client import DEFAULT_API_BASE, Client

P = ParamSpec("P")
R = TypeVar("R")


@attrs.frozen
class ClientContext:
    """What every command gets: where the server is, the key, and the output mode."""

    api_base: str
    api_key: str | None
    json_output: bool

    def client(self, timeout: float | None = 300.0) -> Client:
        return Client(self.api_base, self.api_key, timeout)


pass_client = click.make_pass_decorator(ClientContext)


def coroutine_command(
    fn: Callable[P, Awaitable[R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """Mark a click callback that returns a coroutine (run by `__main__` or the shell)."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        async def run() -> R:
            return await fn(*args, **kwargs)

        return run()

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="viper")
@click.option(
    "--api",
    "api_base",
    envvar="VIPER_API_BASE",
    default=DEFAULT_API_BASE,
    show_default=True,
    help="Base URL of the Viper server (env VIPER_API_BASE).",
)
@click.option(
    "--api-key", envvar="VIPER_API_KEY", default=None, help="API key (env VIPER_API_KEY)."
)
@click.option("--json", "json_output", is_flag=True, help="Print JSON instead of tables.")
@click.pass_context
def cli(ctx: click.Context, api_base: str, api_key: str | None, json_output: bool) -> None:
    """Viper: one isolated headless Chromium per microVM, driven through one server."""
    if not isinstance(ctx.obj, ClientContext):  # the shell passes its own
        ctx.obj = ClientContext(api_base=api_base, api_key=api_key or None, json_output=json_output)


def register_commands() -> None:
    """Attach the command groups (import late: they import this module)."""
    from viper_cli.commands import browsers, images, setup, shell, system, vms

    cli.add_command(vms.vms)
    cli.add_command(browsers.browsers)
    cli.add_command(system.system)
    cli.add_command(shell.shell)
    cli.add_command(images.images)
    cli.add_command(setup.setup)


register_commands()

__all__ = ["ClientContext", "cli", "coroutine_command", "pass_client"]
