"""`viper shell`: the interactive shell."""

from __future__ import annotations

from pathlib import Path

import click

from viper_cli.main import ClientContext, coroutine_command, pass_client


@click.command("shell")
@click.option(
    "--history",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path.home() / ".viper" / "shell_history",
    show_default=True,
)
@pass_client
@coroutine_command
async def shell(ctx: ClientContext, history: Path) -> None:
    """Interactive shell: every command, live events, completion and history."""
    from viper_cli.shell.app import Shell

    await Shell(ctx, history_path=history).run()
